"""Approach 2 (Hoffmann et al. 2022; Zhang et al. 2025): IsoFLOPs parabolas, then power laws.

For each nominal budget C, loss is regressed on a quadratic in ln N by statsmodels OLS;
the vertex gives N_opt(C), with a delta-method standard error on ln N_opt.

D_opt(C) uses the relation the grid itself uses, C = flops_per_token(N) * D, not 6ND:
ln flops_per_token is regressed on ln N over all cells (exactly ln 6 + ln N if the
trainer counts 6N), and D_opt = C / flops_per_token(N_opt). With that relation
N_opt * D_opt * 6 differs from C by exactly the non-6N share of the FLOPs.

A budget is *unreliable*, and left out of the power laws, when its parabola opens
downward, its vertex lies outside the sizes sampled, or its lowest observed loss is
at the smallest or largest size sampled (the minimum is not bracketed).

The power laws ln N_opt = ln k + a ln C and ln D_opt = ln k' + b ln C are fitted by
OLS over the reliable budgets (or WLS with weights 1/se^2 of ln N_opt when
``weighted``); intervals are t intervals from statsmodels.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from ehrscale.fit.intervals import bounded_interval, interval, not_estimable, percentile_interval

MAX_LOG_HALF_WIDTH = 20.0  # a vertex known only to within e^20 either way is a flat budget, not a minimum
MIN_BUDGETS_FOR_INTERVAL = 4  # fewer usable budgets: the exponents' intervals are "not estimable"


def fpt_relation(points: pd.DataFrame) -> dict:
    """ln flops_per_token = c0 + c1 ln N over all cells (c1 = 1 if only one size)."""
    x = np.log(points["n"].to_numpy(float))
    y = np.log(points["flops_per_token"].to_numpy(float))
    if np.ptp(x) == 0:
        return {"intercept": float(np.mean(y - x)), "slope": 1.0, "max_abs_log_residual": float(np.ptp(y) / 2)}
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    return {"intercept": float(intercept), "slope": float(slope), "max_abs_log_residual": float(np.abs(resid).max())}


def fpt_at(rel: dict, n):
    return np.exp(rel["intercept"] + rel["slope"] * np.log(n))


def fit_budget(group: pd.DataFrame, level: float) -> dict:
    """Quadratic of loss in ln N for one budget; vertex, its delta-method SE and reliability."""
    budget = float(group["budget"].iloc[0])
    n = group["n"].to_numpy(float)
    loss = group["loss"].to_numpy(float)
    x = np.log(n)
    out = {"budget": budget, "n_cells": int(len(n)), "n_sizes": int(len(np.unique(n))),
           "n_min": float(n.min()), "n_max": float(n.max())}
    if out["n_sizes"] < 3:
        return out | {"fitted": False, "reliable": False, "reason": f"only {out['n_sizes']} size(s); a parabola needs 3"}
    xm = float(x.mean())
    xc = x - xm
    model = sm.OLS(loss, np.column_stack([np.ones_like(xc), xc, xc**2])).fit()
    b0, b1, b2 = (float(v) for v in model.params)
    cov = np.asarray(model.cov_params()) if model.df_resid > 0 else np.full((3, 3), np.nan)
    out |= {"fitted": True, "coef": [b0, b1, b2], "x_center": xm, "df_resid": float(model.df_resid)}
    if b2 <= 0:
        return out | {"reliable": False, "reason": "parabola opens downward (no minimum)"}
    v = -b1 / (2 * b2)
    grad = np.array([0.0, -1 / (2 * b2), b1 / (2 * b2**2)])
    se = float(math.sqrt(grad @ cov @ grad)) if np.all(np.isfinite(cov)) else math.nan
    t = stats.t.ppf((1 + level) / 2, model.df_resid) if model.df_resid > 0 else math.nan
    log_nopt = xm + v
    out["loss_at_opt"] = b0 - b1**2 / (4 * b2)
    if not (x.min() < log_nopt < x.max()):  # a nearly flat parabola lands here too, its vertex far away
        return out | {"reliable": False, "reason": "fitted minimum lies outside the sizes sampled (flat or edge budget)"}
    half = t * se
    out |= {"log_n_opt": log_nopt, "log_n_opt_se": se}
    if math.isfinite(half) and half > MAX_LOG_HALF_WIDTH:
        return out | {"n_opt": interval(math.exp(log_nopt)), "reliable": False,
                      "reason": f"nearly flat parabola: the vertex's interval spans more than e^{MAX_LOG_HALF_WIDTH:g} either way"}
    out["n_opt"] = interval(math.exp(log_nopt), math.exp(log_nopt - half), math.exp(log_nopt + half))
    order = np.argsort(x, kind="stable")
    argmin = int(np.argmin(loss[order]))
    if argmin == 0 or argmin == len(x) - 1:
        where = "smallest" if argmin == 0 else "largest"
        return out | {"reliable": False, "reason": f"lowest observed loss is at the {where} size sampled (minimum not bracketed)"}
    return out | {"reliable": True, "reason": ""}


def power_law(log_c: np.ndarray, log_y: np.ndarray, se: np.ndarray | None, level: float) -> dict:
    """ln y = ln k + slope ln C by OLS (or WLS if ``se`` is given), centred at the mean ln C."""
    n = len(log_c)
    out: dict = {"n_budgets": int(n), "weighted": se is not None}
    if n < 2:
        return out | {"fitted": False}
    ref = float(np.mean(log_c))
    X = np.column_stack([np.ones(n), log_c - ref])
    model = (sm.WLS(log_y, X, weights=1 / se**2) if se is not None else sm.OLS(log_y, X)).fit()
    c0, slope = (float(v) for v in model.params)
    df = float(model.df_resid)
    cov = np.asarray(model.cov_params()) if df > 0 else np.full((2, 2), np.nan)
    t = stats.t.ppf((1 + level) / 2, df) if df > 0 else math.nan
    se_slope = math.sqrt(cov[1, 1])
    # ln k = c0 - slope*ref; its variance from the covariance of (c0, slope)
    g = np.array([1.0, -ref])
    se_logk = math.sqrt(g @ cov @ g)
    logk = c0 - slope * ref
    return out | {
        "fitted": True,
        "exponent": interval(slope, slope - t * se_slope, slope + t * se_slope),
        "log_k": interval(logk, logk - t * se_logk, logk + t * se_logk),
        "log_c_ref": ref, "params_centered": [c0, slope], "cov_centered": cov.tolist(), "df_resid": df,
        "r_squared": float(model.rsquared) if n > 2 else None,
    }


def predict_power_law(law: dict, budget: float, level: float) -> dict:
    """Point estimate and t interval of y at ``budget`` from a fitted ``power_law`` record."""
    c0, slope = law["params_centered"]
    z = math.log(budget) - law["log_c_ref"]
    mean = c0 + slope * z
    cov = np.array(law["cov_centered"], dtype=float)
    g = np.array([1.0, z])
    var = g @ cov @ g
    t = stats.t.ppf((1 + level) / 2, law["df_resid"]) if law["df_resid"] > 0 else math.nan
    se = math.sqrt(var) if np.isfinite(var) else math.nan
    return interval(math.exp(mean), math.exp(mean - t * se), math.exp(mean + t * se))


def _vertex_bootstrap(group: pd.DataFrame, reps: int, rng) -> np.ndarray:
    """ln N_opt of one budget for ``reps`` resamples of its cells (with replacement), NaN where the
    resampled parabola has no minimum inside the sizes sampled. Weighted normal equations, vectorised."""
    x_raw = np.log(group["n"].to_numpy(float))
    xm = x_raw.mean()
    x, y = x_raw - xm, group["loss"].to_numpy(float)
    w = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=reps).astype(float)
    s = [w @ x**k for k in range(5)]
    t = [w @ (x**k * y) for k in range(3)]
    m = np.stack([np.stack(s[i:i + 3], axis=-1) for i in range(3)], axis=-2)  # (R, 3, 3)
    rhs = np.stack(t, axis=-1)
    det = np.linalg.det(m)
    ok = np.abs(det) > 1e-12 * np.abs(s[0] * s[2] * s[4]).clip(min=1e-300)
    m[~ok] = np.eye(3)
    coef = np.linalg.solve(m, rhs[:, :, None])[:, :, 0]
    with np.errstate(all="ignore"):
        v = -coef[:, 1] / (2 * coef[:, 2])
    ok &= (coef[:, 2] > 0) & (v > x.min()) & (v < x.max())
    return np.where(ok, xm + v, np.nan)


def _slopes(log_c: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """OLS slope of each row of log_y on log_c (rows (R, B) or 1-D), NaN entries left out; NaN if < 2 left."""
    log_y = np.atleast_2d(log_y)
    c = np.broadcast_to(log_c, log_y.shape)
    ok = np.isfinite(log_y) & np.isfinite(c)
    k = ok.sum(axis=1)
    with np.errstate(all="ignore"):
        cm = np.where(ok, c, 0).sum(axis=1) / k
        ym = np.where(ok, log_y, 0).sum(axis=1) / k
        dc = np.where(ok, c - cm[:, None], 0)
        slope = (dc * np.where(ok, log_y - ym[:, None], 0)).sum(axis=1) / (dc**2).sum(axis=1)
    return np.where(k >= 2, slope, np.nan)


def exponents_on_bases(log_c, log_n_opt, rel: dict) -> dict:
    """a and b on both compute bases from ln N_opt at the grid budgets (rows: resamples).
    flops: C is the grid's FLOPs. 6ND: each optimum's own 6 N_opt D_opt, with D_opt = C / flops_per_token(N_opt)."""
    log_n_opt = np.atleast_2d(log_n_opt)
    a_f = _slopes(log_c, log_n_opt)
    log_c6 = log_c + math.log(6) + (1 - rel["slope"]) * log_n_opt - rel["intercept"]
    a_6 = _slopes(log_c6, log_n_opt)  # ln C6 differs per resample: slope row by row
    return {"flops": {"a": a_f, "b": 1 - rel["slope"] * a_f}, "6ND": {"a": a_6, "b": 1 - a_6}}


def bootstrap_exponents(points: pd.DataFrame, good: list[dict], rel: dict, reps: int, seed: int, level: float) -> dict:
    """Approach 2's a and b on both bases with percentile intervals from resampling cells within each
    usable budget and refitting parabolas and power laws; "not estimable" with too few usable budgets."""
    log_c = np.log([r["budget"] for r in good])
    point = exponents_on_bases(log_c, np.array([r["log_n_opt"] for r in good]), rel)
    out = {"method": f"percentile bootstrap ({reps} resamples of cells within each budget; parabolas and power laws refitted)",
           "usable_budgets": len(good), "requested": int(reps)}
    if len(good) < MIN_BUDGETS_FOR_INTERVAL or not reps:
        why = (f"{len(good)} usable budget(s); intervals need at least {MIN_BUDGETS_FOR_INTERVAL}" if reps else "no bootstrap requested")
        for basis, vals in point.items():
            out[basis] = {k: not_estimable(v[0], why) if len(good) >= 2 else not_estimable(math.nan, why) for k, v in vals.items()}
        return out | {"succeeded": 0}
    rng = np.random.default_rng(seed)
    by_budget = dict(tuple(points.groupby("budget", sort=True)))
    log_n = np.column_stack([_vertex_bootstrap(by_budget[r["budget"]], reps, rng) for r in good])
    boot = exponents_on_bases(log_c, log_n, rel)
    out["succeeded"] = int(np.isfinite(boot["flops"]["a"]).sum())
    out["resamples_losing_a_budget"] = int((~np.isfinite(log_n)).any(axis=1).sum())
    for basis, vals in point.items():
        out[basis] = {k: bounded_interval(percentile_interval(v[0], boot[basis][k], level)) for k, v in vals.items()}
    return out


def fit_isoflops(points: pd.DataFrame, level: float = 0.95, weighted: bool = False, bootstrap: int = 1000,
                 seed: int = 0) -> dict:
    rel = fpt_relation(points)
    per_budget = [fit_budget(g, level) for _, g in points.groupby("budget", sort=True)]
    warnings = []
    for rec in per_budget:
        if rec.get("log_n_opt") is not None:
            n_opt = rec["n_opt"]
            f = fpt_at(rel, 1.0)  # scale; D = C / (e^c0 N^c1)
            d = lambda nn: rec["budget"] / (f * nn ** rel["slope"]) if nn else None  # noqa: E731
            rec["d_opt"] = {"estimate": d(n_opt["estimate"]), "ci_low": d(n_opt["ci_high"]), "ci_high": d(n_opt["ci_low"])}
            rec["log_d_opt"] = math.log(rec["d_opt"]["estimate"])
            rec["log_d_opt_se"] = rel["slope"] * rec["log_n_opt_se"]
        if not rec["reliable"]:
            warnings.append(f"budget {rec['budget']:.3g} FLOPs excluded from the power laws: {rec['reason']}")
    good = [r for r in per_budget if r["reliable"]]
    log_c = np.log([r["budget"] for r in good])
    use_w = weighted and len(good) > 0 and all(np.isfinite(r["log_n_opt_se"]) and r["log_n_opt_se"] > 0 for r in good)
    if weighted and not use_w:
        warnings.append("weighted power-law fit requested but some vertices have no standard error; used OLS")
    se_n = np.array([r["log_n_opt_se"] for r in good]) if use_w else None
    se_d = np.array([r["log_d_opt_se"] for r in good]) if use_w else None
    n_law = power_law(log_c, np.array([r["log_n_opt"] for r in good]), se_n, level)
    d_law = power_law(log_c, np.array([r["log_d_opt"] for r in good]), se_d, level)
    if len(good) < 2:
        warnings.append(f"only {len(good)} reliable budget(s): Approach 2 power laws not fitted (need 2, and 3 for intervals)")
    elif len(good) == 2:
        warnings.append("only 2 reliable budgets: Approach 2 power laws pass exactly through them and have no intervals")
    exps = bootstrap_exponents(points, good, rel, bootstrap, seed, level) if good else None
    methods = {
        "parabola": "OLS of loss on (1, x, x^2), x = ln N - mean ln N, per budget; vertex SE by the delta method",
        "d_opt": "C / flops_per_token(N_opt), ln flops_per_token = intercept + slope ln N fitted over all cells",
        "power_laws": ("WLS (weights 1/se^2 of ln N_opt)" if use_w else "OLS") + " of ln N_opt and ln D_opt on ln C over reliable budgets",
        "reliable": "parabola opens upward, vertex inside the sizes sampled, lowest observed loss not at an end size",
    }
    return {"methods": methods, "flops_per_token_relation": rel, "per_budget": per_budget, "n_opt_law": n_law, "d_opt_law": d_law,
            "exponents": exps, "warnings": warnings}
