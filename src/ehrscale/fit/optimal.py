"""Planner: the compute-optimal model for a budget, from a scaling.json.

Used by ``ehrscale plan --budget C --fits scaling.json`` (in :mod:`ehrscale.plan.grid`)::

    result = optimal_for_budget("results/fits/scaling.json", 1e18)
    print(format_plan(result))
"""

from __future__ import annotations

import math

import numpy as np

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import read_json
from ehrscale.fit.intervals import format_interval, interval, jsonable, percentile_interval


def _load(path) -> dict:
    fits = read_json(path, "scaling fits")
    if not isinstance(fits, dict) or not str(fits.get("schema", "")).startswith("ehrscale.scaling/"):
        raise EhrscaleError(f"{path}: not an ehrscale scaling.json (no 'schema' ehrscale.scaling/*)")
    return fits


def repeated_optimum(p, budget: float, unique_tokens: float) -> dict:
    """Minimise the data-constrained law at C = 6ND when only ``unique_tokens`` exist: N, D, epochs, loss,
    the loss the same (N, D) would reach on fresh data, and the difference (the loss lost to repetition).
    ``p``: [E, A, B, alpha, beta, R*], one vector or columns of many (bootstrap samples)."""
    from ehrscale.fit.repetition import predict

    p = np.asarray(p, float).reshape(6, -1)
    log_n = np.linspace(math.log(1e2), math.log(1e13), 4401)[:, None]
    n = np.exp(log_n)
    d = budget / (6 * n)
    with np.errstate(all="ignore"):
        loss = predict(p[:, None, :], n, d, unique_tokens)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    i = np.argmin(loss, axis=0)
    cols = np.arange(p.shape[1])
    n_opt, d_opt = n[i, 0], d[i, 0]
    fresh = p[0] + p[1] / n_opt ** p[3] + p[2] / d_opt ** p[4]
    best = loss[i, cols]
    return {"n_opt": n_opt, "d_opt": d_opt, "epochs": d_opt / unique_tokens, "tokens_per_param": d_opt / n_opt,
            "loss": best, "loss_if_fresh": fresh, "loss_lost_to_repetition": best - fresh}


def optimal_for_budget(scaling_json_path, budget: float, unique_tokens: float | None = None) -> dict:
    """Compute-optimal N, D, D/N and predicted loss at ``budget`` FLOPs, with intervals.

    ``approach3``: closed form at C = 6ND from the parametric fit; intervals are the
    percentile intervals over its bootstrap samples. ``approach3_grid_flops``: the same fit
    minimised along C = flops_per_token(N) D with the cells' FLOPs-per-token relation (the
    one to use when embeddings or attention make FLOPs per token differ from 6N). ``approach2``: the power laws
    N_opt = k C^a, D_opt = k' C^b, with t intervals of the mean. ``frontier_loss``: the
    loss-frontier fit L(C) = E + K C^-gamma. ``data_constrained``: with the data-constrained law (cells
    that repeated their data) and ``unique_tokens`` (default: the most any fitted cell had), the optimum
    when data repeats (:func:`repeated_optimum`). Any part not fitted is ``None``.
    """
    from ehrscale.fit.frontier import frontier_band
    from ehrscale.fit.isoflops import predict_power_law
    from ehrscale.fit.law import PARAM_NAMES, allocate, allocate_flops

    try:
        budget = float(budget)
    except (TypeError, ValueError) as err:
        raise EhrscaleError(f"budget must be a number of FLOPs, got {budget!r}") from err
    if not (budget > 0 and math.isfinite(budget)):
        raise EhrscaleError(f"budget must be a positive number of FLOPs, got {budget!r}")
    fits = _load(scaling_json_path)
    level = float(fits["ci_level"])
    out: dict = {"budget": budget, "param_count": fits["param_count"], "loss_metric": fits["loss_metric"],
                 "ci_level": level, "approach3": None, "approach3_grid_flops": None, "approach2": None, "frontier_loss": None, "warnings": []}
    lo, hi = min(fits["budgets"]), max(fits["budgets"])
    if not lo <= budget <= hi:
        out["warnings"].append(f"budget {budget:.3g} is outside the fitted budgets [{lo:.3g}, {hi:.3g}]: extrapolation")
    par = fits.get("approach3")
    if par:
        point = [par["params"][k]["estimate"] for k in PARAM_NAMES]
        samples = np.asarray(par["bootstrap"]["samples"], float).reshape(-1, len(PARAM_NAMES))
        est, boot = allocate(point, budget), allocate(samples.T, budget)
        out["approach3"] = {k: percentile_interval(est[k], boot[k], level) for k in est} | {"assumes": "C = 6 N D"}
        rel = fits["approach2"]["flops_per_token_relation"]
        est, boot = allocate_flops(point, budget, rel), allocate_flops(samples.T, budget, rel)
        out["approach3_grid_flops"] = {k: percentile_interval(est[k], boot[k], level) for k in est} | {
            "assumes": "C = flops_per_token(N) D, as the grid counts FLOPs"}
    a2 = fits["approach2"]
    if a2["n_opt_law"].get("fitted") and a2["d_opt_law"].get("fitted"):
        n = predict_power_law(a2["n_opt_law"], budget, level)
        d = predict_power_law(a2["d_opt_law"], budget, level)
        tpp = d["estimate"] / n["estimate"]
        out["approach2"] = {"n_opt": n, "d_opt": d, "tokens_per_param": interval(tpp),
                            "assumes": "C = flops_per_token(N) D, as the grid counts FLOPs"}
    fr = fits.get("frontiers", {}).get(fits["loss_metric"])
    if fr and fr.get("fitted"):
        mean, lo_, hi_ = frontier_band(fr, [budget], level)
        out["frontier_loss"] = interval(mean[0], *((lo_[0], hi_[0]) if lo_ is not None else (math.nan, math.nan)))
    dc = fits.get("data_constrained")
    out["data_constrained"] = None
    if dc and dc.get("fitted"):
        u = float(unique_tokens or dc["unique_tokens"])
        names = ("E", "A", "B", "alpha", "beta", "r_star")
        est = repeated_optimum([dc["params"][k]["estimate"] for k in names], budget, u)
        boot = repeated_optimum(np.asarray(dc["bootstrap"]["samples"], float).reshape(-1, 6).T, budget, u)
        out["data_constrained"] = {k: percentile_interval(float(est[k][0]), boot[k], level) for k in est} | {
            "unique_tokens": u, "assumes": "C = 6 N D, D drawn from the unique tokens U (Muennighoff et al. 2023)"}
    if out["approach3"] is None and out["approach2"] is None:
        out["warnings"].append("neither Approach 2 power laws nor Approach 3 were fitted: no plan")
    return jsonable(out)


def _fmt(r: dict | None, prec: str = ".3g") -> str:
    return format_interval(r, prec, brackets=True)


def format_plan(result: dict) -> str:
    """Human-readable lines for ``ehrscale plan``."""
    pct = f"{100 * result['ci_level']:.0f} %"
    lines = [f"Compute-optimal plan for C = {result['budget']:.3g} FLOPs "
             f"(N = {result['param_count']} parameters; {pct} intervals in brackets)"]
    for key, title in (("approach3", "Approach 3 (parametric L(N, D), bootstrap)"),
                       ("approach3_grid_flops", "Approach 3 with the grid's FLOPs per token"),
                       ("approach2", "Approach 2 (IsoFLOPs power laws)")):
        r = result.get(key)
        lines.append(f"  {title}:")
        if not r:
            lines.append("    not fitted")
            continue
        lines.append(f"    parameters N      {_fmt(r['n_opt'])}")
        lines.append(f"    tokens D          {_fmt(r['d_opt'])}")
        lines.append(f"    tokens/parameter  {_fmt(r['tokens_per_param'])}")
        if "loss" in r:
            lines.append(f"    predicted {result['loss_metric']}  {_fmt(r['loss'], prec='.4f')}")
        lines.append(f"    (assumes {r['assumes']})")
    dc = result.get("data_constrained")
    if dc:
        lines += [f"  Data-constrained (U = {dc['unique_tokens']:.3g} unique tokens; {dc['assumes']}):",
                  f"    parameters N      {_fmt(dc['n_opt'])}", f"    tokens D          {_fmt(dc['d_opt'])}",
                  f"    epochs of U       {_fmt(dc['epochs'])}",
                  f"    predicted {result['loss_metric']}  {_fmt(dc['loss'], prec='.4f')}",
                  f"    lost to repetition {_fmt(dc['loss_lost_to_repetition'], prec='.4f')} (against fresh data at that N, D)"]
    if result.get("frontier_loss"):
        lines.append(f"  Loss frontier E + K C^-gamma: {result['loss_metric']} {_fmt(result['frontier_loss'], prec='.4f')}")
    lines += [f"  warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)
