"""Utility laws: clinical AUROC against compute and against loss, with intervals and a backtest.

Inputs: the cells' points (:func:`ehrscale.fit.points.load_points`), each cell's probe record
(``probes/<cell>/metrics.json``) and each task's baseline record (``baseline/<task>.json``).
Per task:

* **Frontier.** The best held-out AUROC at each budget, fitted as the saturating power law
  ``AUROC(C) = A - k (C / C_ref)^(-gamma)`` (A <= 1, k >= 0, gamma in [0, 3]; C_ref the geometric
  mean budget) by weighted least squares, each point weighted by its bootstrap standard error
  (the AUROC interval width / 3.92). Intervals: a parametric bootstrap that redraws every
  frontier AUROC from its normal error and refits; they cover the measurement noise given the
  law's form, so with as many budgets as parameters they are the only honest interval there is.
* **Two-stage law.** Across all probed cells, AUROC as a linear function of validation loss
  (``AUROC = a + b * loss``, the OLMo model-ladder's second stage), by weighted least squares;
  intervals from a cell bootstrap. With L(N, D) from the loss fits it predicts AUROC for any
  (N, D) (:func:`two_stage_predict`).
* **Backtest.** Both laws fitted without the largest budget predict that budget's best AUROC:
  the frontier from compute alone (needs >= 3 smaller budgets, else "not estimable"), the
  two-stage map from the held-out cells' observed losses. Reported: predicted, observed,
  error, and whether the observed value lies in the predicted interval.
* **Rise.** Whether the best AUROC at the largest budget exceeds the smallest budget's by more
  than their intervals (the lower bound at the largest above the upper bound at the smallest).
  Both cells are scored on the same held-out examples, so the rise also gets its own paired
  interval: one stratified bootstrap of the examples scores both cells' predictions
  (``probes/<cell>/<task>.predictions.parquet``), and the rise is beyond it when its lower
  bound is above 0. The two criteria are reported side by side; the first is the stricter.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.intervals import interval, jsonable, percentile_interval

SCHEMA = "ehrscale.utility/1"
PAPER = {"task": "ICU mortality", "auroc_small": 0.68, "auroc_large": 0.75, "params_small": 1e6, "params_large": 28e6,
         "reference": "Zhang et al. 2025, arXiv:2505.22964: AUROC rose from about 0.68 to 0.75 between 1M and 28M "
                      "parameters, then levelled off"}
Z95 = 3.92  # a 95 % normal interval is 3.92 standard errors wide


# --------------------------------------------------------------------------- inputs


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EhrscaleError(f"cannot read probe record {path}: {err}") from err


def utility_points(points: pd.DataFrame, probe_files) -> pd.DataFrame:
    """One row per (cell, task) that was scored: cell, task, budget, n, tokens, loss, auroc, lo, hi, se."""
    by_cell = points.set_index("cell")
    rows = []
    for path in probe_files:
        rec = _read(Path(path))
        cell = rec.get("cell")
        if cell not in by_cell.index:
            raise EhrscaleError(f"{path}: cell {cell!r} has no metrics.json among the fitted cells")
        p = by_cell.loc[cell]
        for task, r in rec.get("tasks", {}).items():
            if r.get("status") != "ok":
                continue
            a = r["held_out"]["auroc"]
            rows.append({"cell": cell, "task": task, "budget": float(p["budget"]), "n": float(p["n"]),
                         "tokens": float(p["tokens"]), "loss": float(p["loss"]), "auroc": a["estimate"],
                         "lo": a.get("lo", math.nan), "hi": a.get("hi", math.nan)})
    df = pd.DataFrame(rows, columns=["cell", "task", "budget", "n", "tokens", "loss", "auroc", "lo", "hi"])
    df["se"] = ((df["hi"] - df["lo"]) / Z95).clip(lower=1e-3).fillna(0.02)
    return df


def read_baselines(files) -> dict:
    return {(r := _read(Path(p))).get("task", Path(p).stem): r for p in files}


# --------------------------------------------------------------------------- frontier law


def saturating(z, a, k, gamma):
    return a - k * np.exp(-gamma * z)


_GAMMA_MAX = 3.0
_GAMMA_GRID = np.linspace(0.0, _GAMMA_MAX, 301)


def _profile(z, y, w, gammas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each gamma: the weighted least-squares (A, k) in [0, 1]^2 and its cost.

    Given gamma the model A - k exp(-gamma z) is linear in (A, k), so the box-constrained
    minimum of this convex quadratic is the free one if it is inside, else the best of the four
    edges' clipped 1-D minima (variable projection: only gamma is searched)."""
    e = np.exp(-np.outer(gammas, z))  # [g, n]
    s1, sy, syy = w.sum(), w @ y, w @ (y * y)
    se_, see, sey = e @ w, (e * e) @ w, e @ (w * y)
    u_free_den = s1 * see - se_ * se_  # u = -k

    def cost(a, u):
        return syy - 2 * a * sy - 2 * u * sey + a * a * s1 + 2 * a * u * se_ + u * u * see

    with np.errstate(divide="ignore", invalid="ignore"):
        a_free = (sy * see - se_ * sey) / u_free_den
        u_free = (s1 * sey - se_ * sy) / u_free_den
    inside = (u_free_den > 1e-12 * s1 * see) & (a_free >= 0) & (a_free <= 1) & (u_free >= -1) & (u_free <= 0)
    cands = [(np.where(inside, a_free, 0.0), np.where(inside, u_free, 0.0), inside)]
    for a_edge in (0.0, 1.0):
        u = np.clip((sey - a_edge * se_) / np.maximum(see, 1e-300), -1.0, 0.0)
        cands.append((np.full_like(u, a_edge), u, np.ones_like(inside)))
    for u_edge in (0.0, -1.0):
        a = np.clip((sy - u_edge * se_) / s1, 0.0, 1.0)
        cands.append((a, np.full_like(a, u_edge), np.ones_like(inside)))
    costs = np.array([np.where(ok, cost(a, u), np.inf) for a, u, ok in cands])
    pick = costs.argmin(axis=0)
    cols = np.arange(len(gammas))
    a = np.array([c[0] for c in cands])[pick, cols]
    u = np.array([c[1] for c in cands])[pick, cols]
    return a, -u, costs[pick, cols]


def _fit_saturating(z, y, se) -> np.ndarray | None:
    """Weighted least squares of A - k exp(-gamma z) with A, k in [0, 1] and gamma in [0, 3].

    A grid over gamma, then finer grids around its best point (to ~1e-6). The fit runs ~4,000
    times per default run (bootstrap draws); a general solver from 3 starts took 10x longer
    and sometimes stopped in a local minimum."""
    w = 1.0 / np.asarray(se, float) ** 2
    if not (np.isfinite(y).all() and np.isfinite(w).all()):
        return None
    gammas, step = _GAMMA_GRID, _GAMMA_GRID[1]
    for _ in range(4):
        a, k, cost = _profile(z, y, w, gammas)
        i = int(cost.argmin())
        best = np.array([a[i], k[i], gammas[i]])
        gammas = np.clip(np.linspace(gammas[i] - step, gammas[i] + step, 41), 0.0, _GAMMA_MAX)
        step /= 20
    return best


def fit_utility_frontier(budget, auroc, se, level: float = 0.95, draws: int = 500, seed: int = 0,
                         predict_at=None) -> dict:
    """Fit AUROC(C) = A - k (C/C_ref)^-gamma to per-budget best AUROCs; intervals by parametric bootstrap."""
    c, y, s = (np.asarray(v, float) for v in (budget, auroc, se))
    out: dict = {"model": "AUROC(C) = A - k * (C / C_ref)^(-gamma)", "n_points": int(len(c))}
    if len(c) < 3:
        return out | {"fitted": False, "reason": f"not estimable: {len(c)} budget(s) for 3 parameters"}
    log_ref = float(np.mean(np.log(c)))
    z = np.log(c) - log_ref
    p = _fit_saturating(z, y, s)
    if p is None:
        return out | {"fitted": False, "reason": "least squares failed"}
    rng = np.random.default_rng(seed)
    boots = [b for b in (_fit_saturating(z, y + s * rng.standard_normal(len(y)), s) for _ in range(draws)) if b is not None]
    boots = np.array(boots)
    out |= {"fitted": True, "log_c_ref": log_ref, "params": [float(v) for v in p],
            "A": percentile_interval(p[0], boots[:, 0], level), "k": percentile_interval(p[1], boots[:, 1], level),
            "gamma": percentile_interval(p[2], boots[:, 2], level), "df_resid": int(len(c) - 3),
            "bootstrap": {"draws": draws, "succeeded": int(len(boots))}}
    if predict_at is not None:
        zp = np.log(np.atleast_1d(np.asarray(predict_at, float))) - log_ref
        curves = np.array([saturating(zp, *b) for b in boots])
        out["predictions"] = [{"budget": float(cc), **percentile_interval(saturating(zz, *p), curves[:, i], level)}
                              for i, (cc, zz) in enumerate(zip(np.atleast_1d(predict_at), zp))]
    return out


def frontier_band(fit: dict, budgets, level: float = 0.95) -> np.ndarray:
    """The fitted frontier at ``budgets`` (for figures)."""
    z = np.log(np.asarray(budgets, float)) - fit["log_c_ref"]
    return saturating(z, *fit["params"])


# --------------------------------------------------------------------------- two-stage law


def _wls_line(x, y, w) -> tuple[float, float]:
    W = np.sqrt(w)
    b, a = np.linalg.lstsq(np.c_[x * W, W], y * W, rcond=None)[0]
    return float(a), float(b)


def fit_two_stage(loss, auroc, se, level: float = 0.95, draws: int = 1000, seed: int = 0) -> dict:
    """AUROC = a + b * loss across cells (weighted by 1/se^2); cell-bootstrap intervals."""
    x, y, s = (np.asarray(v, float) for v in (loss, auroc, se))
    out: dict = {"model": "AUROC = a + b * loss", "n_cells": int(len(x))}
    if len(x) < 3 or np.ptp(x) == 0:
        return out | {"fitted": False, "reason": f"not estimable: {len(x)} cell(s) with distinct losses; need 3"}
    w = 1 / s**2
    a, b = _wls_line(x, y, w)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(draws):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0:
            boots.append(_wls_line(x[i], y[i], w[i]))
    boots = np.array(boots)
    resid = y - (a + b * x)
    return out | {"fitted": True, "params": [a, b], "a": percentile_interval(a, boots[:, 0], level),
                  "b": percentile_interval(b, boots[:, 1], level), "boot_params": boots.tolist(),
                  "rmse": float(np.sqrt(np.mean(resid**2)))}


def two_stage_predict(fit: dict, loss, level: float = 0.95) -> dict:
    """Predicted AUROC at ``loss`` with the cell-bootstrap interval."""
    a, b = fit["params"]
    boots = np.asarray(fit["boot_params"], float)
    return percentile_interval(a + b * float(loss), boots[:, 0] + boots[:, 1] * float(loss), level)


def two_stage_at(fit: dict, scaling: dict | None, n: float, d: float, level: float = 0.95) -> dict | None:
    """AUROC predicted for any (N, D): the loss law L(N, D) (Approach 3 of scaling.json) then the map."""
    try:
        from ehrscale.fit.law import predict

        p = [scaling["approach3"]["params"][k]["estimate"] for k in ("E", "A", "B", "alpha", "beta")]
        loss = float(predict(p, np.array([n], float), np.array([d], float))[0])
    except (KeyError, TypeError, ImportError, ValueError):
        return None
    return {"n": n, "tokens": d, "loss": loss, "auroc": two_stage_predict(fit, loss, level)}


# --------------------------------------------------------------------------- per task


def best_per_budget(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[df.groupby("budget")["auroc"].idxmax()].sort_values("budget").reset_index(drop=True)


def _backtest(df: pd.DataFrame, level: float, seed: int, draws: int) -> dict:
    budgets = sorted(df["budget"].unique())
    if len(budgets) < 2:
        return {"frontier": {"estimable": False, "reason": "one budget"}, "two_stage": {"estimable": False, "reason": "one budget"}}
    top = budgets[-1]
    train, held = df[df["budget"] < top], df[df["budget"] == top]
    observed = float(held["auroc"].max())
    out = {"budget": top, "observed_best_auroc": observed}
    fb = best_per_budget(train)
    fr = fit_utility_frontier(fb["budget"], fb["auroc"], fb["se"], level, draws=draws // 2, seed=seed, predict_at=[top])
    if fr.get("fitted"):
        pred = fr["predictions"][0]
        out["frontier"] = _check(pred, observed) | {"estimable": True}
    else:
        out["frontier"] = {"estimable": False, "reason": fr["reason"] + " (after leaving out the largest budget)"}
    ts = fit_two_stage(train["loss"], train["auroc"], train["se"], level, draws=draws, seed=seed)
    if ts.get("fitted"):
        # the best predicted cell of the held-out budget, from its observed loss
        preds = [two_stage_predict(ts, l, level) for l in held["loss"]]
        pred = max(preds, key=lambda r: r["estimate"])
        out["two_stage"] = _check(pred, observed) | {"estimable": True}
    else:
        out["two_stage"] = {"estimable": False, "reason": ts["reason"]}
    return out


def _check(pred: dict, observed: float) -> dict:
    inside = None
    if pred.get("ci_low") is not None and pred.get("ci_high") is not None:
        inside = bool(pred["ci_low"] <= observed <= pred["ci_high"])
    return {"predicted": pred, "error": pred["estimate"] - observed, "observed_in_interval": inside}


def task_utility(df: pd.DataFrame, baseline: dict | None, scaling: dict | None, level: float, seed: int,
                 draws: int = 1000) -> dict:
    fb = best_per_budget(df)
    budgets = fb["budget"].tolist()
    out: dict = {"n_cells": int(len(df)), "budgets": budgets,
                 "frontier_points": fb[["budget", "cell", "n", "loss", "auroc", "lo", "hi"]].to_dict("records")}
    out["frontier"] = fit_utility_frontier(fb["budget"], fb["auroc"], fb["se"], level, draws=draws // 2, seed=seed)
    ts = fit_two_stage(df["loss"], df["auroc"], df["se"], level, draws=draws, seed=seed)
    out["two_stage"] = {k: v for k, v in ts.items() if k != "boot_params"}
    if ts.get("fitted") and scaling:  # L(N, D) then the map, at each frontier cell's (N, D)
        at = [two_stage_at(ts, scaling, float(r["n"]), float(r["tokens"]), level) for _, r in fb.iterrows()]
        out["two_stage_at_frontier_cells"] = [a for a in at if a is not None] or None
    out["backtest"] = _backtest(df, level, seed, draws)
    small, large = fb.iloc[0], fb.iloc[-1]
    out["rise"] = {"smallest_budget": float(small["budget"]), "largest_budget": float(large["budget"]),
                   "smallest": interval(small["auroc"], small["lo"], small["hi"]) | {"cell": small["cell"]},
                   "largest": interval(large["auroc"], large["lo"], large["hi"]) | {"cell": large["cell"]},
                   "rise": float(large["auroc"] - small["auroc"]),
                   "beyond_intervals": bool(len(fb) > 1 and large["lo"] > small["hi"])}
    if baseline is not None:
        out["baseline"] = ({"status": "ok", "auroc": _as_interval(baseline["held_out"]["auroc"])}
                           if baseline.get("status") == "ok" else {"status": "skipped", "reason": baseline.get("reason")})
    return out


def _as_interval(r: dict) -> dict:
    return interval(r["estimate"], r.get("lo", math.nan), r.get("hi", math.nan))


def fit_utility(points: pd.DataFrame, probe_files, baseline_files=(), scaling: dict | None = None,
                level: float = 0.95, seed: int = 0, draws: int = 1000) -> tuple[dict, pd.DataFrame]:
    """The utility record (utility.json) and the per-(cell, task) table. ``draws``: bootstrap
    resamples of the two-stage map and the rise's paired interval (the frontier's parametric
    bootstrap takes half: each draw is a nonlinear refit)."""
    df = utility_points(points, probe_files)
    baselines = read_baselines(baseline_files)
    tasks = sorted(set(df["task"]) | set(baselines))
    result: dict = {"schema": SCHEMA, "ci_level": level, "paper": PAPER, "tasks": {}, "skipped": {}}
    for path in probe_files:
        rec = _read(Path(path))
        for task, r in rec.get("tasks", {}).items():
            if r.get("status") != "ok":
                result["skipped"].setdefault(task, []).append({"cell": rec.get("cell"), "reason": r.get("reason")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for task in tasks:
            part = df[df["task"] == task]
            if part.empty:
                result["tasks"][task] = {"n_cells": 0, "baseline": baselines.get(task)}
                continue
            result["tasks"][task] = task_utility(part, baselines.get(task), scaling, level, seed, draws)
    for task, t in result["tasks"].items():
        if t.get("rise"):
            t["rise"]["paired"] = paired_rise(probe_files, task, t["rise"], level, seed, draws)
    result["n_tasks_rising"] = sum(bool(t.get("rise", {}).get("beyond_intervals")) for t in result["tasks"].values())
    result["n_tasks_rising_paired"] = sum(bool((t.get("rise", {}).get("paired") or {}).get("beyond_interval"))
                                          for t in result["tasks"].values())
    return jsonable(result), df


def paired_rise(probe_files, task: str, rise: dict, level: float, seed: int, draws: int = 1000) -> dict | None:
    """The rise's paired interval from both frontier cells' held-out predictions; None without them."""
    from ehrscale.probe.metrics import paired_auroc_difference

    cells = {_read(Path(p)).get("cell"): Path(p).parent for p in probe_files}
    ends = [cells.get(rise[k]["cell"]) for k in ("smallest", "largest")] if "cell" in rise["smallest"] else [None]
    if any(d is None for d in ends) or rise["smallest"]["cell"] == rise["largest"]["cell"]:
        return None
    files = [d / f"{task}.predictions.parquet" for d in ends]
    if not all(f.exists() for f in files):
        return None
    cols = ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_probability"]
    a, b = (pd.read_parquet(f, columns=cols) for f in files)
    both = a.merge(b, on=["subject_id", "prediction_time"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(both) != len(a) or len(both) != len(b) or (both["boolean_value_a"] != both["boolean_value_b"]).any():
        raise EhrscaleError(f"{files[0]} and {files[1]}: the two cells' held-out examples differ")
    d = paired_auroc_difference(both["boolean_value_a"], both["predicted_boolean_probability_a"],
                                both["predicted_boolean_probability_b"], draws, seed, level)
    return {**interval(d["estimate"], d.get("lo", math.nan), d.get("hi", math.nan)), "n_boot": d["n_boot"],
            "n": int(len(both)), "beyond_interval": bool(d.get("lo", -1.0) > 0)}
