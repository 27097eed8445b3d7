"""Approach 3 by variable projection (VPNLS; Czech et al. 2026), the primary L(N, D) fit.

For fixed exponents (alpha, beta), L = E + A N^-alpha + B D^-beta is linear in (E, A, B).
On a dense (alpha, beta) grid, (E, A, B) >= 0 are solved by non-negative least squares with
rows weighted by 1/L^2 (so a residual is a relative error, close to a log-loss residual);
the grid's minimum residual sum of squares is the *profile objective*, a map of how well the
data identify (alpha, beta). The best grid point then starts L-BFGS-B on all five parameters
under the summed Huber objective on log loss (:func:`ehrscale.fit.law.objective`).

The 3-column NNLS is solved exactly and vectorised: its solution is the least-squares fit on
one of the 7 column subsets, the feasible (all >= 0) one with the lowest residual, so every
subset is solved in closed form from weighted Gram sums for all grid points and all bootstrap
resamples at once. Nothing needs an IsoFLOPs structure: any (N, D, L) points fit.

Intervals: percentile bootstrap stratified by ``strata`` (budgets): cells are resampled with
replacement within each budget, as multinomial weights, and every resample is refitted (grid,
then L-BFGS-B). Cross-check: profile-likelihood intervals under the estimate's own Huber objective,
on a grid centred on the estimate (:func:`profile_intervals`), so each contains its estimate. The
coarse RSS map (``profile``) stays the figure of how well the data identify (alpha, beta).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.optimize import minimize

from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.intervals import bounded_interval, interval, percentile_interval, single_threaded_blas
from ehrscale.fit.law import BOUNDS, PARAM_NAMES, allocate, allocate_flops, derived, huber, natural, objective

EXPONENT_GRID = np.round(np.arange(0.02, 2.0001, 0.02), 4)  # point fit and profile map: 100 x 100
BOOT_GRID = np.round(np.arange(0.04, 2.0001, 0.08), 4)  # bootstrap starts (Levenberg-Marquardt refines): 25 x 25
_FLOOR = -40.0  # ln of a coefficient that NNLS set to 0 (L-BFGS-B works on logs)


def _gram(w, u, v, y):
    """Weighted Gram sums for every (resample, alpha, beta): w (R, n), u (n, Ga), v (n, Gb), y (n,)."""
    one = np.ones_like(y)
    s = lambda f: w @ f  # noqa: E731  (R, k) sums
    g11 = s(one)[:, None, None]
    g12 = s(u)[:, :, None]
    g13 = s(v)[:, None, :]
    g22 = s(u * u)[:, :, None]
    g33 = s(v * v)[:, None, :]
    g23 = np.einsum("rn,ni,nj->rij", w, u, v, optimize=True)
    c1 = s(y)[:, None, None]
    c2 = s(u * y[:, None])[:, :, None]
    c3 = s(v * y[:, None])[:, None, :]
    yy = s(y * y)[:, None, None]
    return g11, g12, g13, g22, g23, g33, c1, c2, c3, yy


def _nnls3(g11, g12, g13, g22, g23, g33, c1, c2, c3, yy):
    """Exact NNLS for 3 columns from Gram sums (broadcast arrays); returns (rss, x1, x2, x3)."""
    shape = np.broadcast_shapes(*(np.shape(t) for t in (g11, g12, g13, g22, g23, g33)))
    best = np.broadcast_to(yy, shape).astype(float).copy()  # the empty subset: x = 0
    x = [np.zeros(shape) for _ in range(3)]
    tiny = 1e-12
    with np.errstate(all="ignore"):
        # singletons
        for i, (g, c) in enumerate(((g11, c1), (g22, c2), (g33, c3))):
            xi = c / g
            rss = yy - c * xi
            ok = (g > tiny) & (xi >= 0) & (rss < best)
            best = np.where(ok, rss, best)
            for k in range(3):
                x[k] = np.where(ok, xi if k == i else 0.0, x[k])
        # pairs
        for (i, j), (gii, gij, gjj, ci, cj) in (((0, 1), (g11, g12, g22, c1, c2)), ((0, 2), (g11, g13, g33, c1, c3)),
                                                ((1, 2), (g22, g23, g33, c2, c3))):
            det = gii * gjj - gij * gij
            xi = (gjj * ci - gij * cj) / det
            xj = (gii * cj - gij * ci) / det
            rss = yy - ci * xi - cj * xj
            ok = (np.abs(det) > tiny * np.abs(gii * gjj)) & (xi >= 0) & (xj >= 0) & (rss < best)
            best = np.where(ok, rss, best)
            for k in range(3):
                x[k] = np.where(ok, xi if k == i else (xj if k == j else 0.0), x[k])
        # all three, by Cramer's rule
        m11 = g22 * g33 - g23 * g23
        m12 = g12 * g33 - g23 * g13
        m13 = g12 * g23 - g22 * g13
        det = g11 * m11 - g12 * m12 + g13 * m13
        x1 = (c1 * m11 - g12 * (c2 * g33 - g23 * c3) + g13 * (c2 * g23 - g22 * c3)) / det
        x2 = (g11 * (c2 * g33 - g23 * c3) - c1 * m12 + g13 * (g12 * c3 - c2 * g13)) / det
        x3 = (g11 * (g22 * c3 - c2 * g23) - g12 * (g12 * c3 - c2 * g13) + c1 * m13) / det
        rss = yy - c1 * x1 - c2 * x2 - c3 * x3
        ok = (np.abs(det) > tiny * np.abs(g11 * g22 * g33)) & (x1 >= 0) & (x2 >= 0) & (x3 >= 0) & (rss < best)
        best = np.where(ok, rss, best)
        x = [np.where(ok, new, old) for new, old in zip((x1, x2, x3), x)]
    return np.maximum(best, 0.0), x[0], x[1], x[2]


class Design:
    """Scaled regressors: u = (N/N_ref)^-alpha, v = (D/D_ref)^-beta, so the Gram sums stay well conditioned."""

    def __init__(self, n, d, loss, alphas, betas):
        self.log_n, self.log_d, self.loss = np.log(n), np.log(d), np.asarray(loss, float)
        self.ref_n, self.ref_d = float(self.log_n.mean()), float(self.log_d.mean())
        self.alphas, self.betas = np.asarray(alphas, float), np.asarray(betas, float)
        self.u = np.exp(-np.outer(self.log_n - self.ref_n, self.alphas))
        self.v = np.exp(-np.outer(self.log_d - self.ref_d, self.betas))

    def profile(self, counts):
        """(rss, E, A, B) on the grid for each row of ``counts`` (R, n): arrays (R, Ga, Gb)."""
        w = counts / self.loss**2
        rss, e, a_s, b_s = _nnls3(*_gram(w, self.u, self.v, self.loss))
        a = a_s * np.exp(self.alphas[None, :, None] * self.ref_n)
        b = b_s * np.exp(self.betas[None, None, :] * self.ref_d)
        return rss, e, a, b

    def grid_theta(self, e, a, b, i, j) -> np.ndarray:
        """[ln A, ln B, ln E, alpha, beta] of a grid point, zero coefficients floored."""
        with np.errstate(divide="ignore"):
            logs = [max(float(np.log(v)), _FLOOR) for v in (a, b, e)]
        return np.array([*logs, self.alphas[i], self.betas[j]])


def _refine(theta0, log_n, log_d, log_l, w, delta):
    x0 = np.clip(theta0, [lo for lo, _ in BOUNDS], [hi for _, hi in BOUNDS])
    res = minimize(objective, x0, args=(log_n, log_d, log_l, delta, w), jac=True, method="L-BFGS-B",
                   bounds=BOUNDS, options={"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-9})
    return np.asarray(res.x, float), float(res.fun)


def stratified_counts(strata, reps: int, rng) -> np.ndarray:
    """Multinomial resampling weights (reps, n): cells drawn with replacement within each stratum."""
    strata = np.asarray(strata)
    counts = np.zeros((reps, len(strata)))
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=reps)
    return counts


def _profile_at(alpha, beta, start, log_n, log_d, log_l, delta) -> tuple[float, np.ndarray]:
    """min over (ln A, ln B, ln E) of the fit's objective at fixed (alpha, beta), from ``start``."""
    def f(x):
        v, g = objective(np.r_[x, alpha, beta], log_n, log_d, log_l, delta)
        return v, g[:3]

    res = minimize(f, start, jac=True, method="L-BFGS-B", bounds=BOUNDS[:3], options={"maxiter": 500, "ftol": 1e-13})
    return float(res.fun), np.asarray(res.x, float)


def _lr_scale(resid: np.ndarray, delta) -> float:
    """The scale that turns twice a drop in the summed Huber loss into a chi2_1 statistic: E[psi^2] / E[psi']
    for Huber's M-estimator (Schrader & Hettmansperger 1980). E[psi'] = P(|r| <= delta) is taken from a
    Gaussian-kernel density of the residuals: with delta far inside their spread few residuals fall in it,
    and the count alone is noisy (the loss is then nearly L1, and the scale tends to delta / (2 f(0)))."""
    if delta is None:
        return float(np.mean(resid**2))
    h = max(1.06 * np.std(resid) * len(resid) ** -0.2, 1e-12)
    inside = np.mean(stats.norm.cdf((delta - resid) / h) - stats.norm.cdf((-delta - resid) / h))
    return float(np.mean(np.clip(resid, -delta, delta) ** 2) / max(inside, 1e-12))


def profile_intervals(n, d, loss, theta, delta, level: float, steps: int = 41) -> dict:
    """Profile-likelihood intervals of alpha, beta, a and b from the objective the estimate minimises: on a
    ``steps`` x ``steps`` grid centred on the estimate (widened until the region is inside it, at most to
    [0.001, 5]), (ln A, ln B, ln E) are minimised at each (alpha, beta), and the region is
    2 (f - f_min) / scale <= chi2_1(level) (:func:`_lr_scale`). The estimate is the profile's minimum, so
    every interval contains it."""
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    thr = stats.chi2.ppf(level, 1)
    f_min = objective(theta, log_n, log_d, log_l, delta)[0]
    pred = np.logaddexp(np.logaddexp(theta[0] - theta[3] * log_n, theta[1] - theta[4] * log_d), theta[2])
    scale = _lr_scale(pred - log_l, delta) / (delta or 1e-3)  # objective() is the summed Huber / delta
    def outward(values, centre):
        """Indices from the one nearest ``centre`` outwards, each after a neighbour nearer it."""
        c = int(np.argmin(np.abs(values - centre)))
        return [c] + [k for d in range(1, len(values)) for k in (c + d, c - d) if 0 <= k < len(values)]

    def region(alphas, betas):
        # warm starts walk outwards from the estimate: each inner fit starts from a neighbour's optimum
        stat, starts = np.empty((len(alphas), len(betas))), {}
        for i in outward(alphas, theta[3]):
            prev_i = min(starts, key=lambda k: abs(k - i)) if starts else None
            row = {}
            for j in outward(betas, theta[4]):
                near = min(row, key=lambda k: abs(k - j)) if row else None
                start = row[near] if near is not None else (starts[prev_i] if prev_i is not None else theta[:3].copy())
                f, row[j] = _profile_at(alphas[i], betas[j], start, log_n, log_d, log_l, delta)
                stat[i, j] = 2 * max(f - f_min, 0.0) / scale
            starts[i] = row[outward(betas, theta[4])[0]]
        inside = stat <= thr
        return inside, bool(inside[0].any() or inside[-1].any() or inside[:, 0].any() or inside[:, -1].any())

    half = 0.15
    for _ in range(5):  # a box around the estimate, widened until the region is inside it
        alphas = np.clip(np.linspace(theta[3] - half, theta[3] + half, steps), 1e-3, 5.0)
        betas = np.clip(np.linspace(theta[4] - half, theta[4] + half, steps), 1e-3, 5.0)
        inside, edge = region(alphas, betas)
        if not edge or half >= 2.5:
            break
        half *= 2
    ii, jj = np.nonzero(inside)
    if not edge and len(ii):  # then the region's own bounding box, one coarse step wider, at the same resolution
        da, db = alphas[1] - alphas[0], betas[1] - betas[0]
        zoom_a = np.linspace(max(alphas[ii.min()] - da, 1e-3), alphas[ii.max()] + da, steps)
        zoom_b = np.linspace(max(betas[jj.min()] - db, 1e-3), betas[jj.max()] + db, steps)
        zoom, _ = region(zoom_a, zoom_b)
        if zoom.any():
            alphas, betas, inside = zoom_a, zoom_b, zoom
    al, be = np.meshgrid(alphas, betas, indexing="ij")
    out = {}
    for key, grid, est in (("alpha", al, theta[3]), ("beta", be, theta[4]), ("a", be / (al + be), theta[4] / (theta[3] + theta[4])),
                           ("b", al / (al + be), theta[3] / (theta[3] + theta[4]))):
        vals = np.r_[grid[inside], est]  # the estimate is the minimum: always inside
        out[key] = (float(vals.min()), float(vals.max()))
    out["open"] = bool(edge)  # the region reaches the largest searched box: its intervals are cut there
    out["method"] = (f"2 (f - f_min) / scale <= chi2_1({level}) over (alpha, beta), (E, A, B) minimised under the fit's own "
                     "Huber objective, centred on the estimate")
    return out


def fit_once(n, d, loss, delta=1e-3, weights=None, alphas=EXPONENT_GRID, betas=EXPONENT_GRID, n_starts: int = 3):
    """One VP fit: (theta [ln A, ln B, ln E, alpha, beta], Huber objective, grid profile dict)."""
    des = Design(n, d, loss, alphas, betas)
    w = np.ones(len(des.loss)) if weights is None else np.asarray(weights, float)
    rss, e, a, b = (x[0] for x in des.profile(w[None, :]))
    flat = np.argsort(rss, axis=None, kind="stable")
    best = None
    for k in flat[:n_starts]:
        i, j = np.unravel_index(k, rss.shape)
        th, f = _refine(des.grid_theta(e[i, j], a[i, j], b[i, j], i, j), des.log_n, des.log_d, np.log(des.loss), w, delta)
        if np.all(np.isfinite(th)) and (best is None or f < best[1]):
            best = (th, f)
    if best is None:
        raise EhrscaleError("the variable-projection fit of L(N, D) found no finite optimum")
    i, j = np.unravel_index(flat[0], rss.shape)
    return best[0], best[1] * (delta or 1e-3), {"rss": rss, "grid_best": (float(alphas[i]), float(betas[j]))}


def _batch_objective(theta, log_n, log_d, log_l, w, delta):
    """Summed Huber objective for each row of theta (R, 5) with weights w (R, n); also residuals and the
    Jacobian of the predicted log loss (R, n, 5)."""
    a, b, e, alpha, beta = (theta[:, [k]] for k in range(5))
    t1, t2 = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - log_l
    jac = np.stack([e1 / s, e2 / s, e3 / s, -log_n * e1 / s, -log_d * e2 / s], axis=-1)
    f = (w * huber(r, delta)).sum(axis=1)
    return f, r, jac


def refine_batch(theta0, log_n, log_d, log_l, w, delta, iters: int = 150):
    """Levenberg-Marquardt with Huber IRLS weights, vectorised over resamples: minimises the same
    summed Huber objective as L-BFGS-B (tested to agree), for thousands of refits at once. A row
    stops once its step is negligible or its objective stalls (below 1e-12 relative over 10 steps)."""
    lo, hi = np.array([b[0] for b in BOUNDS]), np.array([b[1] for b in BOUNDS])
    theta = np.clip(np.asarray(theta0, float), lo, hi).copy()
    w = np.asarray(w, float)
    f, r, jac = _batch_objective(theta, log_n, log_d, log_l, w, delta)
    lam = np.full(len(theta), 1e-3)
    active = np.ones(len(theta), bool)
    f_past = np.full((10, len(theta)), np.inf)
    for it in range(iters):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        ww, rr, jj = w[idx], r[idx], jac[idx]
        omega = ww if delta is None else ww * np.minimum(1.0, delta / np.maximum(np.abs(rr), 1e-300))
        h = np.einsum("rn,rni,rnj->rij", omega, jj, jj)
        g = np.einsum("rn,rni,rn->ri", omega, jj, rr)
        diag = np.einsum("rii->ri", h)
        a_mat = h + (lam[idx, None] * diag + 1e-12)[:, :, None] * np.eye(5)
        with np.errstate(all="ignore"):
            step = np.linalg.solve(a_mat, -g[:, :, None])[:, :, 0]
        step = np.where(np.isfinite(step), step, 0.0)
        new = np.clip(theta[idx] + step, lo, hi)
        f_new, r_new, jac_new = _batch_objective(new, log_n, log_d, log_l, ww, delta)
        better = np.isfinite(f_new) & (f_new <= f[idx])
        up = idx[better]
        theta[up], f[up], r[up], jac[up] = new[better], f_new[better], r_new[better], jac_new[better]
        lam[idx] = np.where(better, np.maximum(lam[idx] / 3, 1e-9), np.minimum(lam[idx] * 4, 1e9))
        f_past[it % 10] = f
        stalled = (f_past.max(axis=0) - f) <= 1e-12 * np.abs(f) + 1e-300
        active[idx[np.abs(step).max(axis=1) < 1e-10]] = False
        active &= ~stalled
    return theta, f


def bootstrap_counts(n, d, loss, counts, delta=1e-3, chunk: int = 200) -> np.ndarray:
    """Refit for each row of resampling weights ``counts`` (R, n): natural [E, A, B, alpha, beta] (R, 5)."""
    des = Design(n, d, loss, BOOT_GRID, BOOT_GRID)
    log_l = np.log(des.loss)
    out = np.full((len(counts), 5), np.nan)
    for start in range(0, len(counts), chunk):
        block = counts[start:start + chunk]
        rss, e, a, b = des.profile(block)
        best = rss.reshape(len(block), -1).argmin(axis=1)
        i, j = np.unravel_index(best, rss.shape[1:])
        rows = np.arange(len(block))
        with np.errstate(divide="ignore"):
            logs = [np.maximum(np.log(x[rows, i, j]), _FLOOR) for x in (a, b, e)]
        th0 = np.column_stack([*logs, BOOT_GRID[i], BOOT_GRID[j]])
        th, _ = refine_batch(th0, des.log_n, des.log_d, log_l, block, delta)
        good = np.all(np.isfinite(th), axis=1)
        out[start:start + len(block)][good] = np.column_stack(
            [np.exp(th[good, 2]), np.exp(th[good, 0]), np.exp(th[good, 1]), th[good, 3], th[good, 4]])
    return out


def bootstrap(n, d, loss, strata, reps: int, seed: int, delta=1e-3) -> np.ndarray:
    """Stratified bootstrap refits: natural parameters [E, A, B, alpha, beta], shape (reps, 5), NaN where failed."""
    counts = stratified_counts(strata, reps, np.random.default_rng(seed))
    return bootstrap_counts(n, d, loss, counts, delta)


def flops_basis_exponents(p, budgets, fpt_relation: dict) -> dict:
    """a and b on the grid's FLOPs basis, C = flops_per_token(N) D: the slopes of ln N_opt and ln D_opt
    against ln C between the smallest and largest budget (a decade around a single budget)."""
    lo, hi = (min(budgets), max(budgets)) if len(budgets) > 1 and max(budgets) > min(budgets) else \
        (budgets[0] / math.sqrt(10), budgets[0] * math.sqrt(10))
    x0, x1 = allocate_flops(p, lo, fpt_relation, steps=601), allocate_flops(p, hi, fpt_relation, steps=601)
    span = math.log(hi / lo)
    return {"a": np.log(x1["n_opt"] / x0["n_opt"]) / span, "b": np.log(x1["d_opt"] / x0["d_opt"]) / span}


def fit_vp(n, d, loss, *, strata=None, delta=1e-3, bootstrap_reps=1000, seed=0, level=0.95, budgets=(),
           fpt_relation: dict | None = None) -> dict:
    """Variable-projection Approach 3 with stratified-bootstrap and profile-likelihood intervals."""
    with single_threaded_blas():
        return _fit_vp(n, d, loss, strata, delta, bootstrap_reps, seed, level, budgets, fpt_relation)


def _fit_vp(n, d, loss, strata, delta, reps, seed, level, budgets, fpt_relation) -> dict:
    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    strata = np.zeros(len(n)) if strata is None else np.asarray(strata)
    theta, obj, prof = fit_once(n, d, loss, delta)
    p = natural(theta)
    samples = bootstrap(n, d, loss, strata, int(reps), seed, delta) if reps else np.empty((0, 5))
    ok = np.all(np.isfinite(samples), axis=1)
    samples = samples[ok]
    params = {name: percentile_interval(p[i], samples[:, i], level) for i, name in enumerate(PARAM_NAMES)}
    dv, dv_s = derived(p), derived(samples.T)
    for key in ("a", "b"):
        params[key] = bounded_interval(percentile_interval(dv[key], dv_s[key], level))
    params["G"] = percentile_interval(np.exp(dv["log_G"]), np.exp(dv_s["log_G"]), level)
    bases = {"6ND": {"a": params["a"], "b": params["b"]}}
    if fpt_relation is not None and len(budgets):
        fb, fb_s = flops_basis_exponents(p, budgets, fpt_relation), flops_basis_exponents(samples.T, budgets, fpt_relation)
        bases["flops"] = {k: bounded_interval(percentile_interval(float(fb[k]), fb_s[k], level)) for k in ("a", "b")}
    at_budgets = []
    for c in budgets:
        point, boot = allocate(p, c), allocate(samples.T, c)
        at_budgets.append({"budget": float(c)} | {k: percentile_interval(point[k], boot[k], level) for k in point})
    pred = p[0] + p[1] * n ** -p[3] + p[2] * d ** -p[4]
    resid = np.log(pred) - np.log(loss)
    rss = prof["rss"]
    prof_ci = profile_intervals(n, d, loss, theta, delta, level)
    for key in ("alpha", "beta", "a", "b"):
        prof_ci[key] = interval(params[key]["estimate"], *prof_ci[key])
    ga, gb = prof["grid_best"]
    return {
        "method": "variable projection: NNLS for (E, A, B) on a 100 x 100 (alpha, beta) grid, then L-BFGS-B on all five",
        "params": params, "bases": bases, "profile_intervals": prof_ci,
        "theta_log": dict(zip(("a", "b", "e", "alpha", "beta"), map(float, theta))),
        "objective": "summed Huber(delta) of predicted minus observed log loss" if delta else "summed squares of log-loss residuals",
        "huber_delta": delta, "objective_value": obj, "n_cells": int(len(n)),
        "residual_log_loss_rms": float(np.sqrt(np.mean(resid**2))),
        "profile": {"alphas": EXPONENT_GRID.tolist(), "betas": EXPONENT_GRID.tolist(),
                    "rss": rss.tolist(), "grid_best": {"alpha": ga, "beta": gb},
                    "grid_best_on_edge": bool(ga in (EXPONENT_GRID[0], EXPONENT_GRID[-1]) or gb in (EXPONENT_GRID[0], EXPONENT_GRID[-1]))},
        "bootstrap": {"requested": int(reps), "succeeded": int(ok.sum()), "seed": int(seed),
                      "method": "percentile, cells resampled with replacement within each budget, each resample refitted",
                      "param_names": list(PARAM_NAMES), "samples": samples.tolist()},
        "at_budgets": at_budgets,
    }
