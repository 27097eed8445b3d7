"""The loss law L(N, D) = E + A/N^alpha + B/D^beta and what follows from it, shared by every estimator.

Parameterised for fitting as theta = [a, b, e, alpha, beta] with a = ln A, b = ln B, e = ln E: the
predicted log loss is LSE(a - alpha ln N, b - beta ln D, e), and :func:`objective` is the summed
Huber loss of predicted minus observed log loss with its analytic gradient. Compute-optimal
allocation at C = 6ND: a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta)),
N_opt = G (C/6)^a, D_opt = (C/6)^b / G (:func:`allocate`); with the grid's FLOPs, :func:`allocate_flops`.
"""

from __future__ import annotations

import math

import numpy as np

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")  # stored order of bootstrap samples
BOUNDS = [(-50.0, 100.0), (-50.0, 100.0), (-10.0, 10.0), (1e-4, 5.0), (1e-4, 5.0)]  # a, b, e, alpha, beta


def huber(r: np.ndarray, delta: float | None) -> np.ndarray:
    """Huber loss; ``delta`` None is plain least squares (0.5 r^2)."""
    if delta is None:
        return 0.5 * r**2
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r**2, delta * (ar - 0.5 * delta))


def objective(theta, log_n, log_d, log_l, delta, w=None):
    """Summed (``w``-weighted) Huber / delta and its analytic gradient; delta None: squares / 1e-3."""
    a, b, e, alpha, beta = theta
    scale = delta or 1e-3
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    m = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - log_l
    h = huber(r, delta)
    psi = r if delta is None else np.clip(r, -delta, delta)  # dHuber/dr
    if w is not None:
        h, psi = w * h, w * psi
    f = h.sum() / scale
    dr = psi / (scale * s)  # times d pred / d t_i = e_i / s
    g1, g2 = dr * e1, dr * e2
    return f, np.array([g1.sum(), g2.sum(), (dr * e3).sum(), -(g1 @ log_n), -(g2 @ log_d)])


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


def effective_data(tokens, unique_tokens, r_star):
    """Muennighoff et al. (2023): D' = U + U R* (1 - exp(-(D/U - 1) / R*)) once D > U, else D: the
    fresh-data equivalent of D tokens drawn from U unique ones (a repeated token decays in value)."""
    d, u = np.asarray(tokens, float), np.asarray(unique_tokens, float)
    with np.errstate(over="ignore", invalid="ignore"):
        repeated = u + u * r_star * (1 - np.exp(-(d / u - 1) / r_star))
    return np.where(d > u, repeated, d)
