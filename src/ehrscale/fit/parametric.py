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
Compute-optimal allocation at C = 6ND: a = beta/(alpha+beta), b = alpha/(alpha+beta),
G = (alpha A / (beta B))^(1/(alpha+beta)), N_opt = G (C/6)^a, D_opt = (C/6)^b / G.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import minimize

from ehrscale.errors import EhrscaleError
from ehrscale.fit._util import percentile_interval, single_threaded_blas

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")  # stored order of bootstrap samples
BOUNDS = [(-50.0, 100.0), (-50.0, 100.0), (-10.0, 10.0), (1e-4, 5.0), (1e-4, 5.0)]  # a, b, e, alpha, beta
_GRID = np.array(list(itertools.product(
    np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
    np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5),
)))
_GRID[:, 3:] = np.maximum(_GRID[:, 3:], 1e-4)


def _huber(r: np.ndarray, delta: float | None) -> np.ndarray:
    """Huber loss; ``delta`` None is plain least squares (0.5 r^2)."""
    if delta is None:
        return 0.5 * r**2
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r**2, delta * (ar - 0.5 * delta))


def _objective(theta, log_n, log_d, log_l, delta, w=None):
    """Summed (``w``-weighted) Huber / delta and its analytic gradient; delta None: squares / 1e-3."""
    a, b, e, alpha, beta = theta
    scale = delta or 1e-3
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - log_l
    h = _huber(r, delta)
    psi = r if delta is None else np.clip(r, -delta, delta)  # dHuber/dr
    if w is not None:
        h, psi = w * h, w * psi
    f = h.sum() / scale
    dr = psi / (scale * s)  # times d pred / d t_i = e_i / s
    g1, g2 = dr * e1, dr * e2
    return f, np.array([g1.sum(), g2.sum(), (dr * e3).sum(), -(g1 @ log_n), -(g2 @ log_d)])


def _grid_objective(log_n, log_d, log_l, delta) -> np.ndarray:
    """Objective at every grid start, vectorised (starts x cells)."""
    a, b, e, alpha, beta = (_GRID[:, [i]] for i in range(5))
    t1, t2 = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    pred = m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(e - m))
    return _huber(pred - log_l, delta).sum(axis=1) / delta


def _minimise(starts, log_n, log_d, log_l, delta):
    best = None
    for x0 in starts:
        res = minimize(_objective, x0, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
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


def natural(theta) -> np.ndarray:
    """[a, b, e, alpha, beta] -> [E, A, B, alpha, beta]."""
    a, b, e, alpha, beta = theta
    return np.array([math.exp(e), math.exp(a), math.exp(b), alpha, beta])


def derived(p) -> dict:
    """Allocation exponents and G from [E, A, B, alpha, beta] (arrays broadcast)."""
    E, A, B, alpha, beta = (np.asarray(v, float) for v in p)
    with np.errstate(all="ignore"):
        log_g = (np.log(alpha * A) - np.log(beta * B)) / (alpha + beta)
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta), "log_G": log_g}


def allocate(p, budget: float) -> dict:
    """Compute-optimal N, D, D/N and loss at C = 6ND for parameter vector(s) p."""
    E, A, B, alpha, beta = (np.asarray(v, float) for v in p)
    dv = derived(p)
    with np.errstate(all="ignore"):
        log_n = dv["log_G"] + dv["a"] * math.log(budget / 6)
        log_d = -dv["log_G"] + dv["b"] * math.log(budget / 6)
        loss = E + A * np.exp(-alpha * log_n) + B * np.exp(-beta * log_d)
    return {"n_opt": np.exp(log_n), "d_opt": np.exp(log_d), "tokens_per_param": np.exp(log_d - log_n), "loss": loss}


def allocate_flops(p, budget: float, fpt_relation: dict, half_width: float = 6.0, steps: int = 2401) -> dict:
    """Like :func:`allocate` but with the grid's FLOP count, C = flops_per_token(N) * D, where
    ln flops_per_token = intercept + slope ln N; minimised over ln N on a fine grid (step
    2 * half_width / (steps - 1) in ln N) around the 6ND optimum. Vectorised over parameter vectors."""
    E, A, B, alpha, beta = (np.atleast_1d(np.asarray(v, float))[:, None] for v in p)
    centre = np.log(np.atleast_1d(allocate(p, budget)["n_opt"]))[:, None]
    with np.errstate(all="ignore"):
        log_n = centre + np.linspace(-half_width, half_width, steps)[None, :]
        log_d = math.log(budget) - (fpt_relation["intercept"] + fpt_relation["slope"] * log_n)
        loss = E + A * np.exp(-alpha * log_n) + B * np.exp(-beta * log_d)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    i = np.clip(np.argmin(loss, axis=1), 1, steps - 2)
    rows = np.arange(loss.shape[0])
    # parabolic interpolation through the grid minimum and its neighbours: sub-step accuracy
    lm, l0, lp = loss[rows, i - 1], loss[rows, i], loss[rows, i + 1]
    with np.errstate(all="ignore"):
        shift = 0.5 * (lm - lp) / (lm - 2 * l0 + lp)
    shift = np.where(np.isfinite(shift), np.clip(shift, -1, 1), 0.0)
    ln = log_n[rows, i] + shift * (log_n[rows, 1] - log_n[rows, 0])
    ld = math.log(budget) - (fpt_relation["intercept"] + fpt_relation["slope"] * ln)
    with np.errstate(all="ignore"):
        best = E[:, 0] + A[:, 0] * np.exp(-alpha[:, 0] * ln) + B[:, 0] * np.exp(-beta[:, 0] * ld)
    out = {"n_opt": np.exp(ln), "d_opt": np.exp(ld), "tokens_per_param": np.exp(ld - ln), "loss": best}
    scalar = np.ndim(p[0]) == 0
    return {k: (float(v[0]) if scalar else v) for k, v in out.items()}


def predict(p, n, d):
    E, A, B, alpha, beta = p
    return E + A / np.asarray(n, float) ** alpha + B / np.asarray(d, float) ** beta


def _bootstrap(n, d, loss, theta, reps: int, rng, delta) -> np.ndarray:
    """Cell bootstrap: each resample (cells with replacement, as multinomial weights) is refitted from the
    full-data optimum, all at once by the batched Levenberg-Marquardt of :mod:`ehrscale.fit.vp` (the same
    Huber objective; thousands of scipy L-BFGS-B calls took minutes on a poorly posed law)."""
    from ehrscale.fit.vp import refine_batch

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
