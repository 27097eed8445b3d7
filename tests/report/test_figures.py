"""Figures are written, non-empty, as PNG and SVG, for a synthetic runs directory."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ehrscale.core.errors import EhrscaleError  # noqa: E402
from ehrscale.fit.loss import fit_paths, fit_points
from ehrscale.fit.points import load_points  # noqa: E402
from ehrscale.fit.settings import FitSettings
from ehrscale.report.figures import FIGURES, make_figures  # noqa: E402

TRUTH = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}


def write_runs(root, budgets=(1e17, 1e18, 1e19), n_sizes=5, logs=True):
    p, rng = TRUTH, np.random.default_rng(0)
    a = p["beta"] / (p["alpha"] + p["beta"])
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    for c in budgets:
        for i, x in enumerate(np.linspace(-1.5, 1.5, n_sizes)):
            n = g * (c / 6) ** a * math.exp(x)
            d = c / (6 * n)
            loss = (p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]) * math.exp(0.005 * rng.standard_normal())
            cell = root / f"c{c:.0e}_{i}"
            cell.mkdir(parents=True)
            (cell / "metrics.json").write_text(json.dumps({
                "cell": cell.name, "size": f"s{i}", "budget": c, "n_params": n, "n_params_nonembedding": n, "tokens": d,
                "flops": 6 * n * d, "flops_per_token": 6 * n, "val_loss": loss, "train_loss": loss}))
            if logs and i != 0:  # one cell per budget without a log: skipped quietly
                t = np.geomspace(d / 30, d, 8)
                pd.DataFrame({"step": range(8), "tokens": t, "flops": 6 * n * t, "train_loss": loss * (t / d) ** -0.1,
                              "lr": 1e-3, "tokens_per_second": 1.0, "elapsed_s": range(8)}).to_csv(cell / "log.csv", index=False)
    return root


def _assert_written(fig_dir):
    for name in FIGURES:
        for ext in ("png", "svg"):
            path = fig_dir / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert (fig_dir / "isoflops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (fig_dir / "isoflops.svg").read_bytes()[:2000]
    assert not list(fig_dir.glob(".*.tmp"))


def test_figures_written_from_cli_path(tmp_path):
    runs = write_runs(tmp_path / "runs")
    fit_paths(sorted(runs.glob("*/metrics.json")), tmp_path / "fits", FitSettings(bootstrap=20, n_starts=4, calibration_sims=2, calibration_bootstrap=10, epoch_bootstrap=0),
              figures_dir=tmp_path / "fig", summary=tmp_path / "summary.md")
    _assert_written(tmp_path / "fig")
    assert (tmp_path / "summary.md").stat().st_size > 500


def test_a_figure_that_fails_to_draw_fails_the_fit(tmp_path):
    """An unwritable figures directory is a clear error naming it, found before the fits run."""
    runs = write_runs(tmp_path / "runs")
    blocked = tmp_path / "fig"
    blocked.write_text("a file where the figure directory should be")
    with pytest.raises(EhrscaleError, match="fig is a file"):
        fit_paths(sorted(runs.glob("*/metrics.json")), tmp_path / "fits",
                  FitSettings(bootstrap=0, n_starts=2, calibration_sims=0, backtest=False, epoch_bootstrap=0),
                  figures_dir=blocked)


@pytest.mark.parametrize("budgets", [(1e17,), (1e17, 1e18)], ids=["one_budget", "two_budgets"])
def test_figures_without_logs_or_power_laws(tmp_path, budgets):
    runs = write_runs(tmp_path / "runs", budgets=budgets, n_sizes=4, logs=False)
    points, _ = load_points(sorted(runs.glob("*/metrics.json")))
    result = fit_points(points, FitSettings(bootstrap=0, n_starts=2, calibration_sims=0, backtest=False, epoch_bootstrap=0))
    make_figures(points, result, tmp_path / "fig")
    _assert_written(tmp_path / "fig")
