"""A generic "metric against compute" frontier: the best value of a metric at each budget,
fitted as a power law with an irreducible term.

For a metric to minimise (loss): M(C) = E + K * C^(-gamma).
For a metric to maximise (AUROC, coming later): M(C) = E - K * C^(-gamma), E its ceiling.
Fitted by nonlinear least squares (scipy ``curve_fit``) in C / C_ref with C_ref the
geometric mean budget, so K is well scaled; intervals are Wald t intervals from the
covariance (df = points - 3), on ln K for K. Bands for figures come from sampling the
parameters from that normal approximation with a fixed seed.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from ehrscale.fit.intervals import interval

# Which way is better for each metric we know. Unknown metrics must say.
METRIC_DIRECTION = {"val_loss": "min", "train_loss": "min", "loss": "min", "auroc": "max", "auprc": "max"}


def frontier_points(points: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """The best cell per budget: columns budget, value, cell, n."""
    rows = []
    for budget, g in points.groupby("budget", sort=True):
        vals = g[metric].to_numpy(float)
        i = int(np.nanargmin(vals) if direction == "min" else np.nanargmax(vals))
        rows.append({"budget": float(budget), "value": float(vals[i]), "cell": str(g["cell"].iloc[i]), "n": float(g["n"].iloc[i])})
    return pd.DataFrame(rows)


def _model(z, e, log_k, gamma, sign):
    return e + sign * np.exp(log_k - gamma * z)


def _exp(x: float) -> float:
    """exp, with overflow as inf (an interval bound written as not estimable), never an exception."""
    return math.exp(x) if x < 709.0 else math.inf


def fit_frontier(compute, value, direction: str = "min", level: float = 0.95) -> dict:
    """Fit M(C) = E +/- K C^-gamma to (compute, value) pairs."""
    c = np.asarray(compute, float)
    y = np.asarray(value, float)
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
    sign = 1.0 if direction == "min" else -1.0
    out: dict = {"model": f"M(C) = E {'+' if sign > 0 else '-'} K * C^(-gamma)", "direction": direction,
                 "n_points": int(len(c)), "points": [{"budget": float(a), "value": float(b)} for a, b in zip(c, y)]}
    if len(c) < 3:
        return out | {"fitted": False, "reason": f"only {len(c)} budget(s); need 3 for E, K and gamma (4 for intervals)"}
    log_ref = float(np.mean(np.log(c)))
    z = np.log(c) - log_ref
    f = lambda zz, e, lk, g: _model(zz, e, lk, g, sign)  # noqa: E731
    best = None
    span = float(np.ptp(y)) or abs(float(y.mean())) * 0.01 or 1e-3
    e0 = float(y.min() - 0.5 * span) if sign > 0 else float(y.max() + 0.5 * span)
    for g0 in (0.05, 0.2, 0.5, 1.0):
        try:
            p0 = [e0, math.log(max(sign * (y.mean() - e0), 1e-12)), g0]
            with warnings.catch_warnings():  # 3 points: exact fit, no covariance (handled below)
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(f, z, y, p0=p0, maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((f(z, *popt) - y) ** 2))
        if best is None or sse < best[2]:
            best = (popt, pcov, sse)
    if best is None:
        return out | {"fitted": False, "reason": "nonlinear least squares did not converge"}
    popt, pcov, sse = best
    df = len(c) - 3
    t = stats.t.ppf((1 + level) / 2, df) if df > 0 else math.nan
    se = np.sqrt(np.diag(pcov)) if df > 0 and np.all(np.isfinite(pcov)) else np.full(3, math.nan)
    e, lk, g = (float(v) for v in popt)
    log_k = lk + g * log_ref  # K in raw FLOPs: K C^-g = exp(lk) (C/C_ref)^-g
    se_logk = math.sqrt(np.array([0, 1, log_ref]) @ pcov @ np.array([0, 1, log_ref])) if df > 0 else math.nan
    return out | {
        "fitted": True,
        "E": interval(e, e - t * se[0], e + t * se[0]),
        "gamma": interval(g, g - t * se[2], g + t * se[2]),
        "K": interval(_exp(log_k), _exp(log_k - t * se_logk), _exp(log_k + t * se_logk)),
        "log_c_ref": log_ref, "params_centered": [e, lk, g], "cov_centered": np.asarray(pcov).tolist(), "df_resid": df,
        "rmse": math.sqrt(sse / len(c)),
    }


def frontier_band(fit: dict, budgets, level: float = 0.95, draws: int = 500, seed: int = 0):
    """(mean, low, high) of M at ``budgets`` by sampling the fitted parameters' normal approximation."""
    sign = 1.0 if fit["direction"] == "min" else -1.0
    z = np.log(np.asarray(budgets, float)) - fit["log_c_ref"]
    mean = _model(z, *fit["params_centered"], sign)
    cov = np.asarray(fit["cov_centered"], float)
    if fit["df_resid"] <= 0 or not np.all(np.isfinite(cov)):
        return mean, None, None
    draws_ = np.random.default_rng(seed).multivariate_normal(fit["params_centered"], cov, size=draws, method="svd")
    curves = np.array([_model(z, *d, sign) for d in draws_])
    lo, hi = np.quantile(curves, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return mean, lo, hi
