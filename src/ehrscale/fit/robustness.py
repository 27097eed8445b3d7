"""Backtest and sensitivity of the loss law.

* Backtest: fit L(N, D) by variable projection on every budget but the largest, predict the
  largest budget's optimal loss and N_opt (on the grid's FLOPs, the basis the budget is
  named in), and compare with what that budget's cells show: its IsoFLOPs parabola's vertex
  (when reliable) and its best cell.
* Leave-one-budget-out estimates of a.
* a under plain least squares instead of Huber, non-embedding instead of total N, and with
  the smallest model size dropped; Approach 2's a beside each where it can be fitted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.intervals import percentile_interval
from ehrscale.fit.isoflops import fit_isoflops, fpt_relation
from ehrscale.fit.law import allocate_flops, derived, natural
from ehrscale.fit.vp import bootstrap, fit_once, flops_basis_exponents


def _vp_point(pts: pd.DataFrame, delta) -> np.ndarray | None:
    if len(pts) < 6 or pts["n"].nunique() < 2 or pts["tokens"].nunique() < 2:
        return None
    try:
        theta, _, _ = fit_once(pts["n"].to_numpy(float), pts["tokens"].to_numpy(float), pts["loss"].to_numpy(float), delta)
    except EhrscaleError:
        return None
    return natural(theta)


def _a_both(p, pts: pd.DataFrame) -> dict:
    if p is None:
        return {"6ND": None, "flops": None}
    budgets = sorted(pts["budget"].unique().tolist())
    return {"6ND": float(derived(p)["a"]), "flops": float(flops_basis_exponents(p, budgets, fpt_relation(pts))["a"])}


def _a2(pts: pd.DataFrame, level: float) -> float | None:
    if not (pts.groupby("budget")["n"].nunique() >= 3).any():
        return None
    law = fit_isoflops(pts, level, bootstrap=0)["n_opt_law"]
    return law["exponent"]["estimate"] if law.get("fitted") else None


def backtest(points: pd.DataFrame, *, delta, reps: int, seed: int, level: float) -> dict:
    budgets = sorted(points["budget"].unique().tolist())
    if len(budgets) < 2:
        return {"done": False, "reason": "a backtest needs at least 2 budgets"}
    target = budgets[-1]
    train, test = points[points["budget"] < target], points[points["budget"] == target]
    p = _vp_point(train, delta)
    if p is None:
        return {"done": False, "reason": f"too few cells below the largest budget ({len(train)}) for L(N, D)"}
    rel = fpt_relation(points)
    samples = bootstrap(train["n"].to_numpy(float), train["tokens"].to_numpy(float), train["loss"].to_numpy(float),
                        train["budget"].to_numpy(), reps, seed, delta) if reps else np.empty((0, 5))
    samples = samples[np.all(np.isfinite(samples), axis=1)]
    point, boot = allocate_flops(p, target, rel), allocate_flops(samples.T, target, rel)
    pred = {k: percentile_interval(point[k], boot[k], level) for k in ("n_opt", "loss")}
    iso = fit_isoflops(test, level, bootstrap=0)["per_budget"][0] if test["n"].nunique() >= 3 else {"reliable": False}
    best = test.loc[test["loss"].idxmin()]
    observed = {"best_cell": {"cell": str(best["cell"]), "n": float(best["n"]), "loss": float(best["loss"])}}
    if iso.get("reliable"):
        observed["parabola"] = {"n_opt": iso["n_opt"]["estimate"], "loss": iso["loss_at_opt"]}
    ref = observed.get("parabola") or {"n_opt": observed["best_cell"]["n"], "loss": observed["best_cell"]["loss"]}
    covers = lambda r, v: r["ci_low"] is not None and r["ci_low"] <= v <= r["ci_high"]  # noqa: E731
    if pred["loss"]["estimate"] is None or pred["n_opt"]["estimate"] is None:
        return {"done": False, "reason": "the law fitted without the largest budget has no finite optimum there"}
    return {
        "done": True, "held_out_budget": target, "fitted_budgets": budgets[:-1], "fitted_cells": int(len(train)),
        "predicted": pred, "observed": observed, "compared_with": "parabola" if "parabola" in observed else "best_cell",
        "error": {"loss": pred["loss"]["estimate"] - ref["loss"], "loss_relative": pred["loss"]["estimate"] / ref["loss"] - 1,
                  "log_n_opt": math.log(pred["n_opt"]["estimate"] / ref["n_opt"])},
        "inside_interval": {"loss": covers(pred["loss"], ref["loss"]), "n_opt": covers(pred["n_opt"], ref["n_opt"])},
        "bootstrap_succeeded": int(len(samples)),
    }


def leave_one_budget_out(points: pd.DataFrame, *, delta, level: float) -> list[dict]:
    rows = []
    for b in sorted(points["budget"].unique().tolist()):
        rest = points[points["budget"] != b]
        rows.append({"left_out": b, "cells": int(len(rest)), "a_vp": _a_both(_vp_point(rest, delta), rest),
                     "a_approach2": _a2(rest, level)})
    return rows


def sensitivity(points: pd.DataFrame, *, delta, level: float, param_count: str) -> list[dict]:
    """a under alternative choices, each a full refit (point estimates)."""
    other = "nonembedding" if param_count == "total" else "total"
    col = "n_params_nonembedding" if other == "nonembedding" else "n_params"
    smallest = points.loc[points["n"].idxmin(), "size"] if "size" in points else None
    variants = [
        ("as fitted", points, delta),
        ("plain least squares (no Huber)", points, None),
        (f"N = {other} parameters", points.assign(n=points[col].astype(float)), delta),
        (f"smallest size ({smallest}) dropped", points[points["size"] != smallest] if smallest is not None else points, delta),
    ]
    rows = []
    for label, pts, dl in variants:
        rows.append({"variant": label, "cells": int(len(pts)), "a_vp": _a_both(_vp_point(pts, dl), pts),
                     "a_approach2": _a2(pts, level) if dl is not None else None})
    return rows
