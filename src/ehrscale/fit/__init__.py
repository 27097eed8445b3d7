"""``ehrscale fit``: scaling laws, with 95 % intervals, from the trained IsoFLOPs cells.

Reads every cell's metrics.json, fits
  * Approach 2 (the paper's): per-budget parabolas of loss in ln N, then N_opt = k C^a and
    D_opt = k' C^b (:mod:`ehrscale.fit.isoflops`);
  * Approach 3: L(N, D) = E + A/N^alpha + B/D^beta by Huber/L-BFGS with a cell bootstrap
    (:mod:`ehrscale.fit.parametric`);
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
from ehrscale.fit._util import jsonable, single_threaded_blas
from ehrscale.fit.frontier import METRIC_DIRECTION, fit_frontier, frontier_points
from ehrscale.fit.isoflops import fit_isoflops
from ehrscale.fit.parametric import fit_parametric, predict
from ehrscale.fit.plan import format_plan, optimal_for_budget
from ehrscale.fit.points import PARAM_COLUMNS, find_metrics, load_points
from ehrscale.io import atomic_path, load_settings, write_json

__all__ = ["FitSettings", "fit_points", "fit_paths", "optimal_for_budget", "format_plan", "add_arguments", "run"]

log = logging.getLogger(__name__)
SCHEMA = "ehrscale.scaling/1"
PAPER = {"a": 0.58, "b": 0.44, "reference": "Zhang et al. 2025, Exploring Scaling Laws for EHR Foundation Models, arXiv:2505.22964"}


@dataclasses.dataclass
class FitSettings:
    param_count: str = "total"  # "total" (n_params) or "nonembedding" (n_params_nonembedding)
    loss_metric: str = "val_loss"  # the metrics.json key fitted as the loss
    bootstrap: int = 200  # Approach 3 cell-bootstrap resamples (0: no intervals)
    seed: int = 0  # bootstrap seed
    ci_level: float = 0.95
    huber_delta: float = 1e-3
    n_starts: int = 16  # L-BFGS-B starts, the best points of the initial-value grid
    weighted_power_law: bool = False  # Approach 2 power laws by WLS (1/se^2 of ln N_opt) instead of OLS
    frontier_metrics: list = dataclasses.field(default_factory=lambda: ["val_loss"])  # metric-vs-compute frontiers

    def __post_init__(self) -> None:
        if self.param_count not in PARAM_COLUMNS:
            raise EhrscaleError(f"fit.param_count must be one of {sorted(PARAM_COLUMNS)}, got {self.param_count!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise EhrscaleError(f"fit.bootstrap must be a non-negative integer, got {self.bootstrap!r}")
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


def fit_points(points: pd.DataFrame, settings: FitSettings, warnings: list[str] | None = None) -> dict:
    """All fits on a points table (from :func:`load_points`); returns the scaling.json record."""
    with single_threaded_blas():
        return _fit_points(points, settings, warnings)


def _fit_points(points: pd.DataFrame, settings: FitSettings, warnings: list[str] | None) -> dict:
    s = settings
    warnings = list(warnings or [])
    sizes = points.groupby("budget")["n"].nunique()
    if not (sizes >= 3).any():
        raise EhrscaleError(
            f"every budget has fewer than 3 model sizes ({', '.join(f'{b:.3g}: {k}' for b, k in sizes.items())}); "
            "an IsoFLOPs parabola needs at least 3")
    iso = fit_isoflops(points, s.ci_level, s.weighted_power_law)
    warnings += iso.pop("warnings")
    budgets = sorted(points["budget"].unique().tolist())
    if len(points) >= 6 and points["n"].nunique() >= 2 and points["tokens"].nunique() >= 2:
        par = fit_parametric(points["n"], points["tokens"], points["loss"], delta=s.huber_delta, bootstrap=s.bootstrap,
                             seed=s.seed, level=s.ci_level, n_starts=s.n_starts, budgets=budgets)
        if s.bootstrap and par["bootstrap"]["succeeded"] < s.bootstrap:
            warnings.append(f"Approach 3: {s.bootstrap - par['bootstrap']['succeeded']} bootstrap fit(s) failed and were dropped")
    else:
        par = None
        warnings.append(f"Approach 3 not fitted: {len(points)} cell(s); need at least 6 with 2+ sizes and token counts")
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
    headline = {
        "a_approach2": iso["n_opt_law"].get("exponent"), "b_approach2": iso["d_opt_law"].get("exponent"),
        "a_approach3": par["params"]["a"] if par else None, "b_approach3": par["params"]["b"] if par else None,
    }
    return jsonable({
        "schema": SCHEMA,
        "param_count": s.param_count, "param_column": PARAM_COLUMNS[s.param_count],
        "loss_metric": s.loss_metric, "ci_level": s.ci_level,
        "n_cells": len(points), "n_budgets": len(budgets), "max_sizes_per_budget": n_sizes, "budgets": budgets,
        "cells": points["cell"].tolist(),
        "settings": dataclasses.asdict(s), "paper": PAPER, "headline": headline,
        "approach2": iso, "approach3": par, "frontiers": frontiers, "warnings": warnings,
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


def fit_paths(paths, out_dir, settings: FitSettings, figures_dir=None, summary=None, probes=(), baselines=()) -> dict:
    metrics = [settings.loss_metric] + [m for m in settings.frontier_metrics if m != settings.loss_metric]
    points, warnings = load_points(paths, metrics, settings.param_count)
    result = fit_points(points, settings, warnings)
    table = points_table(points, result)
    out_dir = Path(out_dir)
    write_json(out_dir / "scaling.json", result)
    with atomic_path(out_dir / "points.csv") as tmp:
        table.to_csv(tmp, index=False)
    if figures_dir is not None:
        from ehrscale.figures import make_figures

        make_figures(points, result, figures_dir)
    if summary is not None:
        from ehrscale.report import write_summary

        write_summary(result, summary)
    if probes:
        utility_section = fit_utility_paths(points, result, probes, baselines, settings, out_dir, figures_dir)
        if summary is not None:
            text = Path(summary).read_text() + utility_section
            with atomic_path(summary) as tmp:
                Path(tmp).write_text(text)
    return result


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
    parser.add_argument("--probes", nargs="*", default=[], metavar="FILE", help="probe records probes/<cell>/metrics.json (utility laws)")
    parser.add_argument("--baselines", nargs="*", default=[], metavar="FILE", help="baseline records baseline/<task>.json")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(FitSettings, args.settings, "fit")
    paths = find_metrics(args.runs) if args.runs else [Path(p) for p in args.metrics]
    result = fit_paths(paths, args.out, settings, args.figures, args.summary, args.probes, args.baselines)
    for w in result["warnings"]:
        log.warning(w)
    h = result["headline"]
    fmt = lambda r: "n/a" if not r or r.get("estimate") is None else f"{r['estimate']:.3f}"  # noqa: E731
    log.info("fitted %d cells: a = %s (Approach 2), %s (Approach 3); b = %s, %s",
             result["n_cells"], fmt(h["a_approach2"]), fmt(h["a_approach3"]), fmt(h["b_approach2"]), fmt(h["b_approach3"]))
    return 0
