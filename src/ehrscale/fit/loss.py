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
and writes ``scaling.json`` and ``points.csv`` (atomically); ``ehrscale fit`` (:mod:`ehrscale.fit.command`) adds
the figures and the summary section (:mod:`ehrscale.report`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.core.files import atomic_path, check_writable, write_json
from ehrscale.fit.calibration import calibrate, noise_from_replicates, noise_from_residuals
from ehrscale.fit.frontier import METRIC_DIRECTION, fit_frontier, frontier_points
from ehrscale.fit.intervals import bounded_interval, jsonable, percentile_interval, single_threaded_blas
from ehrscale.fit.isoflops import fit_isoflops
from ehrscale.fit.law import PARAM_NAMES, predict
from ehrscale.fit.parametric import fit_parametric
from ehrscale.fit.points import PARAM_COLUMNS, fresh_cells, load_points, resampling_strata, training_record
from ehrscale.fit.repetition import calibrate_data_constrained, fit_data_constrained
from ehrscale.fit.robustness import backtest, leave_one_budget_out, sensitivity
from ehrscale.fit.settings import FitSettings
from ehrscale.fit.vp import fit_vp, flops_basis_exponents

log = logging.getLogger(__name__)
SCHEMA = "ehrscale.scaling/2"
PAPER = {"a": 0.58, "b": 0.44, "reference": "Zhang et al. 2025, Exploring Scaling Laws for EHR Foundation Models, arXiv:2505.22964"}


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
    vp = fit_vp(n, d, loss, strata=resampling_strata(points), delta=s.huber_delta, bootstrap_reps=s.bootstrap,
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


def _data_constrained(points: pd.DataFrame, s: FitSettings, replicates, warnings: list[str]) -> dict | None:
    """The data-constrained law on every cell, when some cell repeats its data (else None: nothing to say)."""
    if "unique_tokens" not in points or not (pd.to_numeric(points["epochs"], errors="coerce") > 1).any():
        return None
    n, d, u, loss = (points[k].to_numpy(float) for k in ("n", "tokens", "unique_tokens", "loss"))
    dc = _guarded("data-constrained law", warnings, fit_data_constrained, n, d, u, loss, strata=resampling_strata(points),
                  delta=s.huber_delta, bootstrap_reps=s.repeat_bootstrap, seed=s.seed, level=s.ci_level)
    if not dc or not dc.get("fitted"):
        return dc
    dc["unique_tokens"] = float(u.max())
    if not dc["params"]["r_star"]["identified"]:
        warnings.append(f"data-constrained law: R* is not identified ({dc['params']['r_star']['reason']})")
    if s.repeat_calibration_sims:
        noise = (noise_from_replicates(points, replicates) or
                 noise_from_residuals(dc["residual_log_loss_rms"], len(points), n_params=6))
        p = [dc["params"][k]["estimate"] for k in ("E", "A", "B", "alpha", "beta", "r_star")]
        dc["calibration"] = _guarded("data-constrained calibration", warnings, calibrate_data_constrained, n, d, u, p,
                                     noise["sigma_log_loss"], strata=resampling_strata(points),
                                     sims=s.repeat_calibration_sims, reps=s.repeat_calibration_bootstrap,
                                     seed=s.seed + 1, level=s.ci_level, delta=s.huber_delta)
        if dc["calibration"]:
            dc["calibration"]["noise"] = noise
    return dc


def _fit_points(points: pd.DataFrame, settings: FitSettings, warnings: list[str] | None, replicates) -> dict:
    s = settings
    warnings = list(warnings or [])
    everything, points = points, fresh_cells(points)
    if len(points) < len(everything):
        warnings.append(f"{len(everything) - len(points)} cell(s) on unique-data subsets: only the data-constrained law "
                        f"reads them; the IsoFLOPs and L(N, D) fits use the {len(points)} on the whole split")
    sizes = points.groupby("budget")["n"].nunique()
    isoflops_design = bool((sizes >= 3).any())
    if not isoflops_design:  # any (N, D, L) cells: Approach 3 needs no budgets
        warnings.append(f"Approach 2 not estimable: every budget has fewer than 3 model sizes (an IsoFLOPs parabola needs "
                        f"3); {len(sizes)} budget(s). L(N, D) is fitted to the cells as they are")
    iso = fit_isoflops(points, s.ci_level, s.weighted_power_law, bootstrap=s.approach2_bootstrap, seed=s.seed)
    iso_warnings = iso.pop("warnings")
    warnings += iso_warnings if isoflops_design else []  # else one line said it all
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
    dc = _data_constrained(everything, s, replicates, warnings)
    return jsonable({
        "schema": SCHEMA,
        "param_count": s.param_count, "param_column": PARAM_COLUMNS[s.param_count],
        "loss_metric": s.loss_metric, "ci_level": s.ci_level,
        "n_cells": len(points), "n_budgets": len(budgets), "max_sizes_per_budget": n_sizes, "budgets": budgets,
        "cells": points["cell"].tolist(),
        "settings": dataclasses.asdict(s), "paper": PAPER, "headline": headline,
        "approach2": iso, "approach3": par, "approach3_epoch": epoch, "calibration": cal, "robustness": checks,
        "frontiers": frontiers, "cell_noise": noise_from_replicates(points, replicates), "warnings": warnings,
    } | ({"data_constrained": dc} if dc is not None else {}))


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


def fit_points_of(paths, settings: FitSettings, replicate_paths=()) -> tuple[pd.DataFrame, dict]:
    """The cells' points (from their metrics.json) and the scaling.json record fitted to them.
    ``replicate_paths``: metrics.json of cells retrained with other seeds (the calibration's noise)."""
    metrics = [settings.loss_metric] + [m for m in settings.frontier_metrics if m != settings.loss_metric]
    points, warnings = load_points(paths, metrics, settings.param_count)
    replicates = (load_points(list(replicate_paths), settings.loss_metric, settings.param_count, seeds_of_a_cell=True)[0]
                  if replicate_paths else None)
    result = fit_points(points, settings, warnings, replicates)
    result["training"] = training_record(points)
    return points, result


def fit_paths(paths, out_dir, settings: FitSettings, figures_dir=None, summary=None, replicate_paths=()) -> dict:
    """Fit the cells' metrics.json; write ``scaling.json`` and ``points.csv`` (atomically) into ``out_dir``,
    and, when given, the loss-law figures and their section of summary.md (:mod:`ehrscale.report`)."""
    out_dir = Path(out_dir)
    for path in (out_dir / "scaling.json", out_dir / "points.csv", summary, figures_dir and Path(figures_dir) / "f.png"):
        if path is not None:
            check_writable(path)  # before the fits, not after them
    points, result = fit_points_of(paths, settings, replicate_paths)
    write_json(out_dir / "scaling.json", result)
    with atomic_path(out_dir / "points.csv") as tmp:
        points_table(points, result).to_csv(tmp, index=False)
    if figures_dir is not None:
        from ehrscale.report.figures import make_figures

        make_figures(points, result, figures_dir)
    if summary is not None:
        from ehrscale.report.sections import loss_section

        with atomic_path(summary) as tmp:
            tmp.write_text(loss_section(result))
    return result
