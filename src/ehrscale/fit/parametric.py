"""Approach 3: L(N, D) = E + A/N^alpha + B/D^beta, fitted as Besiroglu et al. (2024) did.

Parameterised as a = ln A, b = ln B, e = ln E, the predicted log loss is
LSE(a - alpha ln N, b - beta ln D, e). The objective is the Huber loss (delta = 1e-3)
of (predicted - observed) log loss, SUMMED over cells (not averaged), minimised by
L-BFGS-B with an analytic gradient. Starts: the objective is evaluated on the grid of
Besiroglu et al. (alpha, beta in 0..2 step 0.5, e in -1..1 step 0.5, a, b in 0..25
step 5), and L-BFGS-B runs from the best ``n_starts`` grid points; the lowest optimum
wins. Internally the objective is divided by delta (same minimiser, better scaled).

Intervals: percentile bootstrap over cells (resample cells with replacement, refit
from the full-data optimum by the batched Levenberg-Marquardt of :mod:`ehrscale.fit.vp`).
The law, its objective and the allocation it implies are :mod:`ehrscale.fit.law`'s.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.intervals import percentile_interval, single_threaded_blas
from ehrscale.fit.law import BOUNDS, PARAM_NAMES, allocate, derived, huber, natural, objective, predict
from ehrscale.fit.vp import refine_batch

_GRID = np.array(list(itertools.product(
    np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
    np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5),
)))
_GRID[:, 3:] = np.maximum(_GRID[:, 3:], 1e-4)


def _grid_objective(log_n, log_d, log_l, delta) -> np.ndarray:
    """Objective at every grid start, vectorised (starts x cells)."""
    a, b, e, alpha, beta = (_GRID[:, [i]] for i in range(5))
    t1, t2 = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    pred = m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(e - m))
    return huber(pred - log_l, delta).sum(axis=1) / delta


def _minimise(starts, log_n, log_d, log_l, delta):
    best = None
    for x0 in starts:
        res = minimize(objective, x0, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
                       bounds=BOUNDS, options={"maxiter": 5000, "ftol": 1e-13, "gtol": 1e-9})
        if np.all(np.isfinite(res.x)) and (best is None or res.fun < best.fun):
            best = res
    return best


def fit_once(n, d, loss, delta=1e-3, n_starts=16, extra_starts=()) -> tuple[np.ndarray, float]:
    """Return (theta = [a, b, e, alpha, beta], summed Huber objective)."""
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    order = np.argsort(_grid_objective(log_n, log_d, log_l, delta), kind="stable")[:n_starts]
    starts = list(extra_starts) + [_GRID[i] for i in order]
    with single_threaded_blas():
        res = _minimise(starts, log_n, log_d, log_l, delta)
    if res is None:
        raise EhrscaleError("the parametric fit L(N, D) found no finite optimum from any start")
    return np.asarray(res.x, float), float(res.fun * delta)


def _bootstrap(n, d, loss, theta, reps: int, rng, delta) -> np.ndarray:
    """Cell bootstrap: each resample (cells with replacement, as multinomial weights) is refitted from the
    full-data optimum, all at once by the batched Levenberg-Marquardt of :mod:`ehrscale.fit.vp` (the same
    Huber objective; thousands of scipy L-BFGS-B calls took minutes on a poorly posed law)."""
    if not reps:
        return np.empty((0, 5))
    counts = rng.multinomial(len(n), np.full(len(n), 1 / len(n)), size=reps).astype(float)
    th, _ = refine_batch(np.tile(theta, (reps, 1)), np.log(n), np.log(d), np.log(loss), counts, delta)
    out = np.column_stack([np.exp(th[:, 2]), np.exp(th[:, 0]), np.exp(th[:, 1]), th[:, 3], th[:, 4]])
    return np.where(np.all(np.isfinite(out), axis=1)[:, None], out, np.nan)


def fit_parametric(n, d, loss, *, delta=1e-3, bootstrap=200, seed=0, level=0.95, n_starts=16,
                   budgets=()) -> dict:
    with single_threaded_blas():  # entered once here, so the nested per-fit entries are cheap no-ops
        return _fit_parametric(n, d, loss, delta, bootstrap, seed, level, n_starts, budgets)


def _fit_parametric(n, d, loss, delta, bootstrap, seed, level, n_starts, budgets) -> dict:
    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    theta, obj = fit_once(n, d, loss, delta, n_starts)
    p = natural(theta)
    rng = np.random.default_rng(seed)
    samples = _bootstrap(n, d, loss, theta, int(bootstrap), rng, delta)
    ok = np.all(np.isfinite(samples), axis=1)
    samples = samples[ok]
    params = {name: percentile_interval(p[i], samples[:, i], level) for i, name in enumerate(PARAM_NAMES)}
    dv, dv_s = derived(p), derived(samples.T)
    for key in ("a", "b"):
        params[key] = percentile_interval(dv[key], dv_s[key], level)
    params["G"] = percentile_interval(np.exp(dv["log_G"]), np.exp(dv_s["log_G"]), level)
    at_budgets = []
    for c in budgets:
        point, boot = allocate(p, c), allocate(samples.T, c)
        at_budgets.append({"budget": float(c)} | {k: percentile_interval(point[k], boot[k], level) for k in point})
    resid = np.log(predict(p, n, d)) - np.log(loss)
    return {
        "params": params,
        "theta_log": dict(zip(("a", "b", "e", "alpha", "beta"), map(float, theta))),
        "objective": "summed Huber(delta) of predicted minus observed log loss",
        "huber_delta": delta, "objective_value": obj, "n_cells": int(len(n)),
        "residual_log_loss_rms": float(np.sqrt(np.mean(resid**2))),
        "bootstrap": {"requested": int(bootstrap), "succeeded": int(ok.sum()), "seed": int(seed),
                      "method": "percentile, resampling cells with replacement, refitted from the full-data optimum",
                      "param_names": list(PARAM_NAMES), "samples": samples.tolist()},
        "at_budgets": at_budgets,
    }
