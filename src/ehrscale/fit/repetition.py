"""Approach 3 under repeated data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models").

EHR data is finite: a cell of D tokens drawn from U unique ones repeats them R = D / U times. Its
tokens are worth D' = U + U R* (1 - exp(-(R - 1) / R*)) fresh ones (D' = D while R <= 1): each repeat
is worth less, and R* sets how fast. The law is

    L = E + A / N^alpha + B / D'^beta     (:func:`ehrscale.fit.law.effective_data`)

fitted as the plain law is (:mod:`ehrscale.fit.vp`): for fixed (alpha, beta, R*), (E, A, B) >= 0 are
linear, solved by NNLS on a grid of (alpha, beta) at each R* of a log grid; the best grid point starts
L-BFGS-B on all six parameters under the summed Huber objective on log loss. A matching N' term
(excess parameters decaying) is not fitted: a CPU grid's largest models are far from overparameterised.

Reported: the six parameters with budget-stratified bootstrap intervals, each "not identified" when its
interval reaches the edge of the searched box; the number of epochs after which a repeated token is
worth less than half a fresh one (dD'/dD = exp(-(R - 1) / R*) = 1/2 at R = 1 + R* ln 2); the profile of
the objective over R*; the law against the plain L(N, D) by leave-one-cell-out prediction error and by a
backtest on the largest budget; and a calibration on the design's own cells.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.intervals import percentile_interval, single_threaded_blas
from ehrscale.fit.law import BOUNDS, effective_data, huber, natural
from ehrscale.fit.vp import EXPONENT_GRID, Design, fit_once, stratified_counts

R_GRID = np.geomspace(0.25, 256.0, 41)  # R* searched on the grid
LOG_R_BOUNDS = (math.log(0.05), math.log(5000.0))  # and refined within
NAMES = ("E", "A", "B", "alpha", "beta", "r_star")
_BOUNDS6 = [*BOUNDS, LOG_R_BOUNDS]  # [ln A, ln B, ln E, alpha, beta, ln R*]
_NATURAL_BOUNDS = [tuple(math.exp(v) for v in _BOUNDS6[2]), *(tuple(math.exp(v) for v in b) for b in _BOUNDS6[:2]),
                   _BOUNDS6[3], _BOUNDS6[4], tuple(math.exp(v) for v in LOG_R_BOUNDS)]  # in NAMES order


def predict(p, n, d, u):
    """The law at (N, D, U) for natural parameters p = [E, A, B, alpha, beta, R*]."""
    e, a, b, alpha, beta, r_star = p
    return e + a / np.asarray(n, float) ** alpha + b / effective_data(d, u, r_star) ** beta


def half_value_epochs(r_star):
    """Epochs after which a repeated token is worth less than half a fresh one: 1 + R* ln 2."""
    return 1.0 + np.asarray(r_star, float) * math.log(2.0)


def _objective(theta, log_n, d, u, log_l, delta, w):
    """Summed weighted Huber / delta of the log-loss residual and its gradient; theta =
    [ln A, ln B, ln E, alpha, beta, ln R*]."""
    a, b, e, alpha, beta, log_r = theta
    r_star = math.exp(log_r)
    dp = effective_data(d, u, r_star)
    log_dp = np.log(dp)
    t1, t2 = a - alpha * log_n, b - beta * log_dp
    m = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - log_l
    scale = delta or 1e-3
    psi = w * (r if delta is None else np.clip(r, -delta, delta))
    f = (w * huber(r, delta)).sum() / scale
    dr = psi / (scale * s)
    g1, g2 = dr * e1, dr * e2
    x = np.maximum(d / u - 1.0, 0.0)  # repetitions beyond the first pass
    with np.errstate(over="ignore", invalid="ignore"):
        dd_dr = np.where(d > u, u * ((1 - np.exp(-x / r_star)) - x / r_star * np.exp(-x / r_star)), 0.0)
    dlogdp_dlogr = r_star * dd_dr / dp
    grad = [g1.sum(), g2.sum(), (dr * e3).sum(), -(g1 @ log_n), -(g2 @ log_dp), -beta * (g2 @ dlogdp_dlogr)]
    return f, np.array(grad)



def _refine(theta0, log_n, d, u, log_l, delta, w):
    x0 = np.clip(theta0, [lo for lo, _ in _BOUNDS6], [hi for _, hi in _BOUNDS6])
    res = minimize(_objective, x0, args=(log_n, d, u, log_l, delta, w), jac=True, method="L-BFGS-B",
                   bounds=_BOUNDS6, options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-9})
    return np.asarray(res.x, float), float(res.fun)


def _grid(n, d, u, loss, w) -> tuple[np.ndarray, list[np.ndarray]]:
    """The profile objective (min over alpha, beta of the NNLS residual) at each R* of R_GRID, and the
    three best grid starts [ln A, ln B, ln E, alpha, beta, ln R*]."""
    prof, starts = np.empty(len(R_GRID)), []
    for k, r_star in enumerate(R_GRID):
        des = Design(n, effective_data(d, u, r_star), loss, EXPONENT_GRID, EXPONENT_GRID)
        rss, e, a, b = (x[0] for x in des.profile(w[None, :]))
        i, j = np.unravel_index(int(np.argmin(rss)), rss.shape)
        prof[k] = rss[i, j]
        starts.append(np.r_[des.grid_theta(e[i, j], a[i, j], b[i, j], i, j), math.log(r_star)])
    best = np.argsort(prof, kind="stable")[:3]
    return prof, [starts[k] for k in best]


def fit_once_repeated(n, d, u, loss, delta=1e-3, weights=None) -> tuple[np.ndarray, float, np.ndarray]:
    """One fit: (theta [ln A, ln B, ln E, alpha, beta, ln R*], objective, profile over R_GRID)."""
    n, d, u, loss = (np.asarray(v, float) for v in (n, d, u, loss))
    w = np.ones(len(n)) if weights is None else np.asarray(weights, float)
    prof, starts = _grid(n, d, u, loss, w)
    fits = [_refine(s, np.log(n), d, u, np.log(loss), delta, w) for s in starts]
    theta, f = min(fits, key=lambda t: t[1])
    if not np.all(np.isfinite(theta)):
        raise EhrscaleError("the data-constrained fit of L(N, D') found no finite optimum")
    return theta, f * (delta or 1e-3), prof


def to_natural(theta) -> np.ndarray:
    return np.r_[natural(theta[:5]), math.exp(theta[5])]


def _bootstrap(n, d, u, loss, theta, strata, reps: int, seed: int, delta) -> np.ndarray:
    """Resamples (cells within strata, as weights) refitted from the full-data optimum; natural parameters."""
    rng = np.random.default_rng(seed)
    counts = stratified_counts(strata, reps, rng)
    out = np.full((reps, 6), np.nan)
    for r in range(reps):
        th, _ = _refine(theta, np.log(n), d, u, np.log(loss), delta, counts[r])
        if np.all(np.isfinite(th)):
            out[r] = to_natural(th)
    return out


def _identified(rec: dict, low: float, high: float) -> dict:
    lo, hi = rec.get("ci_low"), rec.get("ci_high")
    edge = lo is None or hi is None or lo <= low * 1.0001 or hi >= high / 1.0001
    return rec | {"identified": not edge} | ({"reason": f"the interval reaches the searched range's edge ({low:.3g} or {high:.3g})"}
                                             if edge else {})


def _follows(r_star: dict) -> dict:
    """A quantity computed from R* is identified exactly when R* is."""
    return {"identified": True} if r_star["identified"] else {"identified": False, "reason": "R* is not identified"}


def _prediction_errors(n, d, u, loss, strata, delta) -> dict:
    """Leave-one-cell-out and largest-budget backtest errors of log loss: this law against the plain one."""
    log_l = np.log(loss)

    def errors(mask):
        w = (~mask).astype(float)
        th_dc = fit_once_repeated(n, d, u, loss, delta, w)[0]
        th_plain = fit_once(n, d, loss, delta, weights=w)[0]
        p_plain = natural(th_plain)
        plain = np.log(p_plain[0] + p_plain[1] * n[mask] ** -p_plain[3] + p_plain[2] * d[mask] ** -p_plain[4])
        return np.log(predict(to_natural(th_dc), n[mask], d[mask], u[mask])) - log_l[mask], plain - log_l[mask]

    loo_dc, loo_plain = np.empty(len(n)), np.empty(len(n))
    for i in range(len(n)):
        mask = np.zeros(len(n), bool)
        mask[i] = True
        loo_dc[i], loo_plain[i] = (e[0] for e in errors(mask))
    out = {"leave_one_cell_out": {"rmse_data_constrained": float(np.sqrt(np.mean(loo_dc**2))),
                                  "rmse_plain": float(np.sqrt(np.mean(loo_plain**2))), "n_cells": int(len(n))}}
    top = strata == strata.max()
    if len(np.unique(strata)) >= 2 and (~top).sum() >= 7:
        bt_dc, bt_plain = errors(top)
        out["backtest_largest_budget"] = {"budget": float(strata.max()), "n_cells": int(top.sum()),
                                          "rmse_data_constrained": float(np.sqrt(np.mean(bt_dc**2))),
                                          "rmse_plain": float(np.sqrt(np.mean(bt_plain**2)))}
    out["lower_error"] = "data_constrained" if out["leave_one_cell_out"]["rmse_data_constrained"] < \
        out["leave_one_cell_out"]["rmse_plain"] else "plain"
    return out


def fit_data_constrained(n, d, u, loss, *, strata=None, delta=1e-3, bootstrap_reps=200, seed=0, level=0.95,
                         compare: bool = True) -> dict:
    """The data-constrained law with intervals and its comparison with the plain law (module docstring)."""
    n, d, u, loss = (np.asarray(v, float) for v in (n, d, u, loss))
    strata = np.zeros(len(n)) if strata is None else np.asarray(strata, float)
    epochs = d / u
    if not (epochs > 1).any():
        return {"fitted": False, "reason": "no cell repeats its data (every cell trains at most one epoch): R* is not estimable"}
    if len(n) < 7:
        return {"fitted": False, "reason": f"{len(n)} cells for 6 parameters: not estimable"}
    with single_threaded_blas():
        theta, obj, prof = fit_once_repeated(n, d, u, loss, delta)
        p = to_natural(theta)
        samples = _bootstrap(n, d, u, loss, theta, strata, int(bootstrap_reps), seed, delta) if bootstrap_reps else np.empty((0, 6))
        ok = np.all(np.isfinite(samples), axis=1)
        params = {k: _identified(percentile_interval(p[i], samples[ok, i], level), *_NATURAL_BOUNDS[i])
                  for i, k in enumerate(NAMES)}
        half = percentile_interval(float(half_value_epochs(p[5])), half_value_epochs(samples[ok, 5]), level)
        resid = np.log(predict(p, n, d, u)) - np.log(loss)
        out = {"fitted": True, "model": "L = E + A/N^alpha + B/D'^beta, D' = U + U R* (1 - exp(-(D/U - 1)/R*))",
               "params": params, "half_value_epochs": half | _follows(params["r_star"]),
               "theta_log": dict(zip(("a", "b", "e", "alpha", "beta", "log_r_star"), map(float, theta))),
               "objective_value": obj, "residual_log_loss_rms": float(np.sqrt(np.mean(resid**2))),
               "n_cells": int(len(n)), "max_epochs": float(epochs.max()),
               "profile_r_star": {"r_star": R_GRID.tolist(), "rss": prof.tolist()},
               "bootstrap": {"requested": int(bootstrap_reps), "succeeded": int(ok.sum()), "seed": int(seed),
                             "method": "percentile, cells resampled within strata, refitted from the optimum",
                             "param_names": list(NAMES), "samples": samples[ok].tolist()}}
        if compare:
            out["comparison"] = _prediction_errors(n, d, u, loss, strata, delta)
    return out


def calibrate_data_constrained(n, d, u, p_true, sigma: float, *, strata=None, sims: int = 20, reps: int = 100,
                               seed: int = 1, level: float = 0.95, delta=1e-3) -> dict:
    """Tables drawn from the law ``p_true`` on these cells with log-loss noise ``sigma``, each refitted:
    the bias of R* and how often its interval covers the truth."""
    n, d, u = (np.asarray(v, float) for v in (n, d, u))
    rng = np.random.default_rng(seed)
    truth = predict(p_true, n, d, u)
    hits, est, with_interval = 0, [], 0
    for k in range(sims):
        loss = truth * np.exp(sigma * rng.standard_normal(len(n)))
        fit = fit_data_constrained(n, d, u, loss, strata=strata, delta=delta, bootstrap_reps=reps, seed=seed + k,
                                   level=level, compare=False)
        if not fit.get("fitted"):
            continue
        r = fit["params"]["r_star"]
        est.append(r["estimate"])
        if r["ci_low"] is not None:
            with_interval += 1
            hits += r["ci_low"] <= p_true[5] <= r["ci_high"]
    est = np.asarray(est, float)
    return {"sims": int(sims), "sigma_log_loss": float(sigma), "truth_r_star": float(p_true[5]),
            "median_r_star": float(np.median(est)) if len(est) else None,
            "log_bias": float(np.median(np.log(est / p_true[5]))) if len(est) else None,
            "coverage": hits / with_interval if with_interval else None, "with_interval": int(with_interval),
            "level": level}


def interval_text(r: dict | None) -> str:
    """For the summary: a value with its interval, or 'not identified'."""
    if not r or r.get("estimate") is None:
        return "n/a"
    if r.get("identified") is False:
        return f"not identified ({r['estimate']:.3g}; {r.get('reason')})"
    if r.get("ci_low") is None:
        return f"{r['estimate']:.3g}"
    return f"{r['estimate']:.3g} ({r['ci_low']:.3g} to {r['ci_high']:.3g})"

