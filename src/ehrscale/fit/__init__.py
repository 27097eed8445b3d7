"""``ehrscale fit``: scaling laws, with 95 % intervals, from the trained IsoFLOPs cells.

Reads every cell's metrics.json, fits
  * Approach 2 (the paper's): per-budget parabolas of loss in ln N, then N_opt = k C^a and
    D_opt = k' C^b, with a bootstrap over cells within budgets (:mod:`ehrscale.fit.isoflops`);
  * Approach 3: L(N, D) = E + A/N^alpha + B/D^beta by variable projection, the primary fit, with a
    budget-stratified bootstrap and profile-likelihood intervals (:mod:`ehrscale.fit.vp`), and the
    Epoch-style Huber/L-BFGS fit as a cross-check (:mod:`ehrscale.fit.parametric`);
  * a and b on both compute bases: C = 6ND and the grid's FLOPs;
  * a calibration on this grid's own cells (:mod:`ehrscale.fit.calibration`), a backtest on the
    largest budget and a sensitivity table (:mod:`ehrscale.fit.robustness`);
  * a frontier, best metric against compute, for every metric in ``frontier_metrics``
    (:mod:`ehrscale.fit.frontier`); a clinical metric (AUROC) slots in here;
and writes ``scaling.json`` and ``points.csv`` (atomically), the figures and summary.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.errors import EhrscaleError
from ehrscale.fit._util import bounded_interval, jsonable, percentile_interval, single_threaded_blas
from ehrscale.fit.calibration import calibrate, noise_from_replicates, noise_from_residuals
from ehrscale.fit.frontier import METRIC_DIRECTION, fit_frontier, frontier_points
from ehrscale.fit.isoflops import fit_isoflops
from ehrscale.fit.parametric import PARAM_NAMES, fit_parametric, predict
from ehrscale.fit.plan import format_plan, optimal_for_budget
from ehrscale.fit.points import PARAM_COLUMNS, find_metrics, load_points, training_record
from ehrscale.fit.robustness import backtest, leave_one_budget_out, sensitivity
from ehrscale.fit.vp import fit_vp, flops_basis_exponents
from ehrscale.io import atomic_path, load_settings, write_json

__all__ = ["FitSettings", "fit_points", "fit_paths", "optimal_for_budget", "format_plan", "add_arguments", "run"]

log = logging.getLogger(__name__)
SCHEMA = "ehrscale.scaling/2"
PAPER = {"a": 0.58, "b": 0.44, "reference": "Zhang et al. 2025, Exploring Scaling Laws for EHR Foundation Models, arXiv:2505.22964"}


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
        for key in ("bootstrap", "epoch_bootstrap", "approach2_bootstrap", "calibration_sims", "calibration_bootstrap"):
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


def fit_points(points: pd.DataFrame, settings: FitSettings, warnings: list[str] | None = None,
               replicates: pd.DataFrame | None = None) -> dict:
    """All fits on a points table (from :func:`load_points`); returns the scaling.json record.
    ``replicates``: other-seed losses of some cells (columns cell, loss) for the noise estimate."""
    with single_threaded_blas():
        return _fit_points(points, settings, warnings, replicates)


def _loss_law(points: pd.DataFrame, s: FitSettings, budgets: list, rel: dict, warnings: list[str]) -> tuple[dict | None, dict | None]:
    """Approach 3 twice: variable projection (primary) and the Epoch-style fit (cross-check)."""
    if not (len(points) >= 6 and points["n"].nunique() >= 2 and points["tokens"].nunique() >= 2):
        warnings.append(f"Approach 3 not fitted: {len(points)} cell(s); need at least 6 with 2+ sizes and token counts")
        return None, None
    n, d, loss = (points[k].to_numpy(float) for k in ("n", "tokens", "loss"))
    vp = fit_vp(n, d, loss, strata=points["budget"].to_numpy(), delta=s.huber_delta, bootstrap_reps=s.bootstrap,
                seed=s.seed, level=s.ci_level, budgets=budgets, fpt_relation=rel)
    if s.bootstrap and vp["bootstrap"]["succeeded"] < s.bootstrap:
        warnings.append(f"Approach 3: {s.bootstrap - vp['bootstrap']['succeeded']} bootstrap fit(s) failed and were dropped")
    if vp["profile"]["grid_best_on_edge"]:
        warnings.append("Approach 3: the (alpha, beta) profile's minimum is on the edge of the grid (0.02-2): exponents poorly identified")
    if vp["profile_intervals"]["open"]:
        warnings.append("Approach 3: the profile-likelihood region reaches the edge of the (alpha, beta) grid; its intervals are cut there")
    ep = fit_parametric(n, d, loss, delta=s.huber_delta, bootstrap=s.epoch_bootstrap, seed=s.seed, level=s.ci_level,
                        n_starts=s.n_starts, budgets=budgets)
    samples = np.asarray(ep["bootstrap"]["samples"], float).reshape(-1, len(PARAM_NAMES))
    point = [ep["params"][k]["estimate"] for k in PARAM_NAMES]
    fb, fb_s = flops_basis_exponents(point, budgets, rel), flops_basis_exponents(samples.T, budgets, rel)
    for k in ("a", "b"):
        ep["params"][k] = bounded_interval(ep["params"][k])
    ep["bases"] = {"6ND": {"a": ep["params"]["a"], "b": ep["params"]["b"]},
                   "flops": {k: bounded_interval(percentile_interval(float(fb[k]), fb_s[k], s.ci_level)) for k in ("a", "b")}}
    gap = abs(vp["params"]["a"]["estimate"] - ep["params"]["a"]["estimate"])
    vp["agreement_with_epoch"] = {"abs_diff_a": gap, "agree": gap < 0.01}
    if gap >= 0.01:
        warnings.append(f"Approach 3: variable projection and the Epoch-style fit disagree on a by {gap:.3f} (a poorly posed law?)")
    return vp, ep


def _headline(iso: dict, vp: dict | None, ep: dict | None) -> dict:
    """a and b on both compute bases by every estimator; 'flops' is the grid's FLOPs, '6ND' is C = 6ND."""
    ex = iso.get("exponents") or {}
    out = {}
    for basis in ("6ND", "flops"):
        out[basis] = {k: {"approach3_vp": vp["bases"].get(basis, {}).get(k) if vp else None,
                          "approach3_epoch": ep["bases"].get(basis, {}).get(k) if ep else None,
                          "approach2": ex.get(basis, {}).get(k)} for k in ("a", "b")}
    return out


def _calibration(points: pd.DataFrame, s: FitSettings, vp: dict | None, rel: dict, replicates, warnings) -> dict | None:
    if vp is None or not s.calibration_sims:
        return None
    noise = ({"sigma_log_loss": float(s.noise_sd), "source": "fit.noise_sd"} if s.noise_sd is not None else
             noise_from_replicates(points, replicates) or noise_from_residuals(vp["residual_log_loss_rms"], len(points)))
    if noise["source"].startswith("fit residuals"):
        warnings.append("calibration noise from the fit's residuals (no seed replicates): an upper bound that includes misfit")
    p_true = [vp["params"][k]["estimate"] for k in PARAM_NAMES]
    cal = calibrate(points, p_true, noise["sigma_log_loss"], rel, sims=s.calibration_sims, vp_bootstrap=s.calibration_bootstrap,
                    a2_bootstrap=s.approach2_bootstrap, seed=s.seed + 1, level=s.ci_level, delta=s.huber_delta)
    return cal | {"noise": noise}


def _guarded(name: str, warnings: list[str], func, *args, **kwargs):
    """Run a diagnostic (calibration, backtest, sensitivity); a numerical failure on a degenerate design
    becomes a warning, never the end of the fit, whose estimates stand on their own."""
    try:
        return func(*args, **kwargs)
    except (ArithmeticError, ValueError, TypeError, np.linalg.LinAlgError) as err:
        warnings.append(f"{name} failed and was left out: {type(err).__name__}: {err}")
        log.debug("%s failed", name, exc_info=True)
        return None


def _fit_points(points: pd.DataFrame, settings: FitSettings, warnings: list[str] | None, replicates) -> dict:
    s = settings
    warnings = list(warnings or [])
    sizes = points.groupby("budget")["n"].nunique()
    if not (sizes >= 3).any():
        raise EhrscaleError(
            f"every budget has fewer than 3 model sizes ({', '.join(f'{b:.3g}: {k}' for b, k in sizes.items())}); "
            "an IsoFLOPs parabola needs at least 3")
    iso = fit_isoflops(points, s.ci_level, s.weighted_power_law, bootstrap=s.approach2_bootstrap, seed=s.seed)
    warnings += iso.pop("warnings")
    if iso["exponents"] and iso["exponents"]["usable_budgets"] < 4:
        warnings.append(f"Approach 2: {iso['exponents']['usable_budgets']} usable budget(s); its exponents' intervals are "
                        "not estimable (need 4)")
    budgets = sorted(points["budget"].unique().tolist())
    rel = iso["flops_per_token_relation"]
    par, epoch = _loss_law(points, s, budgets, rel, warnings)
    frontiers = {}
    for metric in s.frontier_metrics:
        fp = frontier_points(points, metric, METRIC_DIRECTION[metric])
        fr = fit_frontier(fp["budget"], fp["value"], METRIC_DIRECTION[metric], s.ci_level)
        fr["points"] = [p | {"cell": c, "n": n} for p, c, n in zip(fr["points"], fp["cell"], fp["n"])]
        if not fr["fitted"]:
            warnings.append(f"{metric} frontier not fitted: {fr['reason']}")
        elif fr["df_resid"] <= 0:
            warnings.append(f"{metric} frontier: {fr['n_points']} budgets for 3 parameters, an exact fit with no intervals")
        frontiers[metric] = fr
    n_sizes = int(sizes.max())
    if len(budgets) < 3:
        warnings.append(f"only {len(budgets)} budget(s): exponents are poorly determined")
    by_basis = _headline(iso, par, epoch)
    headline = {
        "a_approach2": by_basis["flops"]["a"]["approach2"], "b_approach2": by_basis["flops"]["b"]["approach2"],
        "a_approach3": par["params"]["a"] if par else None, "b_approach3": par["params"]["b"] if par else None,
        "by_basis": by_basis,
    }
    cal = _guarded("calibration", warnings, _calibration, points, s, par, rel, replicates, warnings)
    checks = None
    if s.backtest and par is not None:
        checks = {
            "backtest": _guarded("backtest", warnings, backtest, points, delta=s.huber_delta, reps=s.bootstrap, seed=s.seed,
                                 level=s.ci_level) or {"done": False, "reason": "failed (see warnings)"},
            "leave_one_budget_out": _guarded("leave-one-budget-out", warnings, leave_one_budget_out, points,
                                             delta=s.huber_delta, level=s.ci_level) or [],
            "sensitivity": _guarded("sensitivity", warnings, sensitivity, points, delta=s.huber_delta, level=s.ci_level,
                                    param_count=s.param_count) or [],
        }
    return jsonable({
        "schema": SCHEMA,
        "param_count": s.param_count, "param_column": PARAM_COLUMNS[s.param_count],
        "loss_metric": s.loss_metric, "ci_level": s.ci_level,
        "n_cells": len(points), "n_budgets": len(budgets), "max_sizes_per_budget": n_sizes, "budgets": budgets,
        "cells": points["cell"].tolist(),
        "settings": dataclasses.asdict(s), "paper": PAPER, "headline": headline,
        "approach2": iso, "approach3": par, "approach3_epoch": epoch, "calibration": cal, "robustness": checks,
        "frontiers": frontiers, "warnings": warnings,
    })


def points_table(points: pd.DataFrame, result: dict) -> pd.DataFrame:
    """points.csv: one row per cell, with each fit's prediction and the budget's reliability."""
    df = points.drop(columns=["log_path", "loss"]).copy()
    df.insert(df.columns.get_loc("n_params_nonembedding") + 1, "param_count", result["param_count"])
    rel = {r["budget"]: r for r in result["approach2"]["per_budget"]}
    df["budget_reliable"] = [bool(rel[b]["reliable"]) for b in df["budget"]]
    preds = []
    for b, n in zip(df["budget"], df["n"]):
        r = rel[b]
        if r.get("fitted"):
            x = np.log(n) - r["x_center"]
            preds.append(r["coef"][0] + r["coef"][1] * x + r["coef"][2] * x * x)
        else:
            preds.append(np.nan)
    df["approach2_parabola_loss"] = preds
    par = result["approach3"]
    if par:
        p = [par["params"][k]["estimate"] for k in ("E", "A", "B", "alpha", "beta")]
        df["approach3_loss"] = predict(p, df["n"].to_numpy(float), df["tokens"].to_numpy(float))
    best = points.groupby("budget")["loss"].transform("min")
    df["is_budget_best"] = points["loss"].to_numpy() == best.to_numpy()
    return df


def fit_paths(paths, out_dir, settings: FitSettings, figures_dir=None, summary=None, replicate_paths=(),
              probes=(), baselines=()) -> dict:
    metrics = [settings.loss_metric] + [m for m in settings.frontier_metrics if m != settings.loss_metric]
    points, warnings = load_points(paths, metrics, settings.param_count)
    replicates = load_points(list(replicate_paths), settings.loss_metric, settings.param_count)[0] if replicate_paths else None
    result = fit_points(points, settings, warnings, replicates)
    result["training"] = training_record(points)
    table = points_table(points, result)
    out_dir = Path(out_dir)
    write_json(out_dir / "scaling.json", result)
    with atomic_path(out_dir / "points.csv") as tmp:
        table.to_csv(tmp, index=False)
    drawing = _draw_in_background(points, result, figures_dir) if figures_dir is not None else None
    utility_section = fit_utility_paths(points, result, probes, baselines, settings, out_dir, figures_dir) if probes else ""
    if drawing is not None:
        drawing.join()
        if drawing.exitcode != 0:
            raise EhrscaleError(f"drawing the scaling-law figures in {figures_dir} failed (exit {drawing.exitcode}); see the log")
    if summary is not None:
        from ehrscale.report import write_summary

        write_summary(result, summary, utility_section)
    return result


def _draw(points, result, figures_dir) -> None:
    from ehrscale.figures import make_figures

    try:
        make_figures(points, result, figures_dir)
    except Exception as err:  # reported by the parent through the exit code
        log.error("figures: %s: %s", type(err).__name__, err)
        raise SystemExit(1) from err


def _draw_in_background(points, result, figures_dir):
    """The loss-law figures in a forked process (~20 s of rendering) while the utility laws fit."""
    import multiprocessing

    proc = multiprocessing.get_context("fork").Process(target=_draw, args=(points, result, figures_dir), daemon=True)
    proc.start()
    return proc


def fit_utility_paths(points, scaling, probes, baselines, settings: FitSettings, out_dir, figures_dir=None) -> str:
    """Utility laws (:mod:`ehrscale.fit.utility`): writes utility.json, utility.csv and the figures;
    returns the summary section."""
    from ehrscale.fit.utility import fit_utility, make_utility_figures, summary_section

    utility, table = fit_utility(points, probes, baselines, scaling, settings.ci_level, settings.seed)
    write_json(Path(out_dir) / "utility.json", utility)
    with atomic_path(Path(out_dir) / "utility.csv") as tmp:
        table.to_csv(tmp, index=False)
    if figures_dir is not None:
        make_utility_figures(utility, table, figures_dir)
    return summary_section(utility)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", help="directory of trained cells, each <cell>/metrics.json (+ log.csv)")
    src.add_argument("--metrics", nargs="+", metavar="FILE", help="the metrics.json files to fit (log.csv beside each)")
    parser.add_argument("--out", required=True, help="directory for scaling.json and points.csv")
    parser.add_argument("--figures", help="directory for the figures (PNG and SVG)")
    parser.add_argument("--summary", help="path of the Markdown summary")
    parser.add_argument("--settings", help="fit settings as JSON or @file.json (keys of FitSettings)")
    parser.add_argument("--replicates", nargs="*", default=[], metavar="FILE",
                        help="metrics.json of cells retrained with other seeds: the loss noise for the calibration")
    parser.add_argument("--probes", nargs="*", default=[], metavar="FILE", help="probe records probes/<cell>/metrics.json (utility laws)")
    parser.add_argument("--baselines", nargs="*", default=[], metavar="FILE", help="baseline records baseline/<task>.json")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(FitSettings, args.settings, "fit")
    paths = find_metrics(args.runs) if args.runs else [Path(p) for p in args.metrics]
    result = fit_paths(paths, args.out, settings, args.figures, args.summary, args.replicates, args.probes, args.baselines)
    for w in result["warnings"]:
        log.warning(w)
    h = result["headline"]
    fmt = lambda r: "n/a" if not r or r.get("estimate") is None else f"{r['estimate']:.3f}"  # noqa: E731
    log.info("fitted %d cells: a = %s (Approach 2), %s (Approach 3); b = %s, %s",
             result["n_cells"], fmt(h["a_approach2"]), fmt(h["a_approach3"]), fmt(h["b_approach2"]), fmt(h["b_approach3"]))
    return 0
