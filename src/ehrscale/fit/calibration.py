"""Calibration on this experiment's own design: can this grid answer the question?

Synthetic losses are drawn from the fitted law (variable projection's L(N, D)) at this
experiment's exact (N, D) cells, with multiplicative log-normal noise of the size a cell's
loss actually has: estimated from seed replicates of a few cells when they exist (the opt-in
``replicates`` rule), else from the fit's residuals (an upper bound: it includes misfit).
Each simulated table is refitted by every estimator, and the bias, RMSE and coverage of each
estimate of a and b are reported against the law's true values on the same compute basis.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ehrscale.fit.intervals import bounded_interval, percentile_interval
from ehrscale.fit.isoflops import fit_isoflops
from ehrscale.fit.law import derived, natural, predict
from ehrscale.fit.points import resampling_strata
from ehrscale.fit.vp import bootstrap_counts, fit_once, flops_basis_exponents, stratified_counts


def noise_from_replicates(points: pd.DataFrame, replicates: pd.DataFrame | None) -> dict | None:
    """Pooled SD of ln loss within a cell across seeds (the main run's seed counts as one replicate)."""
    if replicates is None or replicates.empty:
        return None
    main = points[["cell", "loss"]]
    both = pd.concat([main, replicates[["cell", "loss"]]], ignore_index=True)
    both = both[both["cell"].isin(set(replicates["cell"]))]
    groups = [np.log(g["loss"].to_numpy(float)) for _, g in both.groupby("cell") if len(g) >= 2]
    dof = sum(len(g) - 1 for g in groups)
    if dof < 1:
        return None
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    return {"sigma_log_loss": math.sqrt(ss / dof), "source": "seed replicates", "cells": len(groups), "dof": dof}


def noise_from_residuals(resid_rms: float, n_cells: int, n_params: int = 5) -> dict:
    dof = max(n_cells - n_params, 1)
    return {"sigma_log_loss": resid_rms * math.sqrt(n_cells / dof), "source": "fit residuals (upper bound: includes misfit)",
            "cells": n_cells, "dof": dof}


def _truths(p, budgets, rel) -> dict:
    dv = derived(p)
    fb = flops_basis_exponents(p, budgets, rel)
    return {"6ND": {"a": float(dv["a"]), "b": float(dv["b"])}, "flops": {"a": float(fb["a"]), "b": float(fb["b"])}}


def _summarise(records: list[dict], truth: float) -> dict:
    est = np.array([r["estimate"] if r.get("estimate") is not None else np.nan for r in records], float)
    has_ci = [r.get("ci_low") is not None and r.get("ci_high") is not None for r in records]
    covered = [r["ci_low"] <= truth <= r["ci_high"] for r, h in zip(records, has_ci) if h]
    ok = np.isfinite(est)
    return {"truth": truth, "fitted": int(ok.sum()), "bias": float(np.mean(est[ok] - truth)) if ok.any() else None,
            "rmse": float(np.sqrt(np.mean((est[ok] - truth) ** 2))) if ok.any() else None,
            "coverage": float(np.mean(covered)) if covered else None, "with_interval": len(covered),
            "not_estimable": int(sum(bool(r.get("not_estimable")) for r in records))}


def calibrate(points: pd.DataFrame, p_true, sigma: float, rel: dict, *, sims: int, vp_bootstrap: int,
              a2_bootstrap: int, seed: int, level: float, delta: float) -> dict:
    """Refit ``sims`` synthetic tables drawn from ``p_true`` ([E, A, B, alpha, beta]) on this grid's cells."""
    n, d = points["n"].to_numpy(float), points["tokens"].to_numpy(float)
    budgets = sorted(points["budget"].unique().tolist())
    truth = _truths(p_true, budgets, rel)
    mean_loss = predict(p_true, n, d)
    rng = np.random.default_rng(seed)
    recs: dict = {("vp", b, k): [] for b in truth for k in ("a", "b")} | {("approach2", b, k): [] for b in truth for k in ("a", "b")}
    for _ in range(sims):
        loss = mean_loss * np.exp(sigma * rng.standard_normal(len(n)))
        sim = points.assign(loss=loss)
        theta, _, _ = fit_once(n, d, loss, delta, n_starts=1)
        p = natural(theta)
        samples = bootstrap_counts(n, d, loss, stratified_counts(resampling_strata(points), vp_bootstrap, rng), delta)
        samples = samples[np.all(np.isfinite(samples), axis=1)]
        point, boot = _truths(p, budgets, rel), {"6ND": derived(samples.T), "flops": flops_basis_exponents(samples.T, budgets, rel)}
        for b in truth:
            for k in ("a", "b"):
                recs[("vp", b, k)].append(bounded_interval(percentile_interval(point[b][k], boot[b][k], level)))
        iso = fit_isoflops(sim, level, bootstrap=a2_bootstrap, seed=int(rng.integers(2**31)))
        for b in truth:
            for k in ("a", "b"):
                ex = iso["exponents"]
                recs[("approach2", b, k)].append(ex[b][k] if ex else {"estimate": None, "not_estimable": "no usable budget"})
    out: dict = {"sims": sims, "sigma_log_loss": sigma, "level": level, "truth": truth, "seed": seed,
                 "vp_bootstrap": vp_bootstrap, "approach2_bootstrap": a2_bootstrap,
                 "truth_law": dict(zip(("E", "A", "B", "alpha", "beta"), map(float, p_true)))}
    for (est, basis, k), r in recs.items():
        out.setdefault(est, {}).setdefault(basis, {})[k] = _summarise(r, truth[basis][k])
    return out
