"""The ``fit`` config section: estimators, bootstraps, calibration and intervals."""

from __future__ import annotations

import dataclasses

from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.frontier import METRIC_DIRECTION
from ehrscale.fit.points import PARAM_COLUMNS


@dataclasses.dataclass
class FitSettings:
    param_count: str = "total"  # "total" (n_params) or "nonembedding" (n_params_nonembedding)
    loss_metric: str = "val_loss"  # the metrics.json key fitted as the loss
    bootstrap: int = 1000  # Approach 3 (variable projection) budget-stratified bootstrap resamples (0: no intervals)
    epoch_bootstrap: int = 200  # cell-bootstrap resamples of the Epoch-style cross-check (0: point estimate only)
    approach2_bootstrap: int = 1000  # Approach 2 resamples of cells within budgets (0: no intervals)
    calibration_sims: int = 50  # simulated tables on this grid's cells (0: no calibration)
    calibration_bootstrap: int = 200  # variable-projection resamples inside each simulated fit
    noise_sd: float | None = None  # SD of ln loss for the calibration; None: seed replicates, else the residuals
    # The data-constrained law (cells that repeat their data; ehrscale.fit.repetition): its bootstrap, and
    # its calibration's simulated tables and resamples inside each
    repeat_bootstrap: int = 200
    repeat_calibration_sims: int = 20
    repeat_calibration_bootstrap: int = 100
    backtest: bool = True  # backtest, leave-one-budget-out and sensitivity refits
    seed: int = 0  # bootstrap and simulation seed
    ci_level: float = 0.95
    huber_delta: float = 1e-3
    n_starts: int = 16  # L-BFGS-B starts, the best points of the initial-value grid
    weighted_power_law: bool = False  # Approach 2 power laws by WLS (1/se^2 of ln N_opt) instead of OLS
    frontier_metrics: list = dataclasses.field(default_factory=lambda: ["val_loss"])  # metric-vs-compute frontiers

    def __post_init__(self) -> None:
        if self.param_count not in PARAM_COLUMNS:
            raise EhrscaleError(f"fit.param_count must be one of {sorted(PARAM_COLUMNS)}, got {self.param_count!r}")
        for key in ("bootstrap", "epoch_bootstrap", "approach2_bootstrap", "calibration_sims", "calibration_bootstrap",
                    "repeat_bootstrap", "repeat_calibration_sims", "repeat_calibration_bootstrap"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise EhrscaleError(f"fit.{key} must be a non-negative integer, got {value!r}")
        if self.noise_sd is not None and not (isinstance(self.noise_sd, (int, float)) and self.noise_sd > 0):
            raise EhrscaleError(f"fit.noise_sd must be a positive number or null, got {self.noise_sd!r}")
        if not 0 < float(self.ci_level) < 1:
            raise EhrscaleError(f"fit.ci_level must be in (0, 1), got {self.ci_level!r}")
        if not float(self.huber_delta) > 0:
            raise EhrscaleError(f"fit.huber_delta must be positive, got {self.huber_delta!r}")
        if not isinstance(self.n_starts, int) or self.n_starts < 1:
            raise EhrscaleError(f"fit.n_starts must be a positive integer, got {self.n_starts!r}")
        if not isinstance(self.frontier_metrics, list) or not all(isinstance(m, str) for m in self.frontier_metrics):
            raise EhrscaleError(f"fit.frontier_metrics must be a list of metric names, got {self.frontier_metrics!r}")
        if not isinstance(self.loss_metric, str) or not self.loss_metric:
            raise EhrscaleError(f"fit.loss_metric must be a metrics.json key, got {self.loss_metric!r}")
        unknown = [m for m in self.frontier_metrics if m not in METRIC_DIRECTION]
        if unknown:
            raise EhrscaleError(f"fit.frontier_metrics: no known direction for {unknown}; known: {sorted(METRIC_DIRECTION)}")
