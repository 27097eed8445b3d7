"""Clinical utility: frozen models embed the labelled examples, a logistic-regression probe
scores each task (``ehrscale embed``, ``ehrscale probe``), beside a no-model baseline on
bag-of-codes counts (``ehrscale baseline``).

* :mod:`ehrscale.probe.embed`: the final hidden state (after the last norm) at the last token
  before each prediction time; one forward pass per patient window serves every prediction
  time that fits in it. Cached per cell, so probe settings never re-embed.
* :mod:`ehrscale.probe.linear`: standardize, choose the L2 strength on tuning, fit on train,
  report on held_out with stratified bootstrap intervals (:mod:`ehrscale.probe.metrics`).
* :mod:`ehrscale.probe.baseline`: the same probe on log counts of every token before the
  prediction time (the whole history, no model).
"""

from __future__ import annotations

import dataclasses

from ehrscale.errors import EhrscaleError


@dataclasses.dataclass
class ProbeSettings:
    """The ``probe`` config section."""

    c_values: list = dataclasses.field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    max_iter: int = 2000
    bootstrap: int = 1000  # stratified bootstrap resamples of held_out
    seed: int = 0
    ci_level: float = 0.95
    min_positives: int = 10  # positives (and negatives) each of train, tuning and held_out needs
    device: str = "auto"  # embedding: auto | cpu | cuda | cuda:N
    batch_tokens: int = 65536  # embedding: padded tokens per forward batch

    def __post_init__(self) -> None:
        c = self.c_values
        if not isinstance(c, list) or len(c) < 7 or not all(isinstance(v, (int, float)) and v > 0 for v in c):
            raise EhrscaleError(f"probe.c_values must be a list of at least 7 positive numbers, got {c!r}")
        for name in ("max_iter", "min_positives", "batch_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise EhrscaleError(f"probe.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise EhrscaleError(f"probe.bootstrap must be a non-negative integer, got {self.bootstrap!r}")
        if not 0 < float(self.ci_level) < 1:
            raise EhrscaleError(f"probe.ci_level must be in (0, 1), got {self.ci_level!r}")
