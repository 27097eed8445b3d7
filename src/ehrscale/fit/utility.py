"""Utility laws: clinical AUROC against compute and against loss, with honest intervals and backtests.

Inputs: the cells' points (:func:`ehrscale.fit.points.load_points`), each cell's probe record
(``probes/<cell>/metrics.json``, its held-out predictions beside it) and each task's baseline
record (``baseline/<task>.json``, its predictions beside it).

**held_out is read, never used to choose.** At each budget the cell that represents it is the one
with the highest *tuning* AUROC (the probe already chose C and its threshold on tuning): tuning
AUROC is the task's own measure and the tuning split is independent of held_out; validation loss
is task-agnostic and would miss a task whose AUROC peaks at another size. Every frontier, rise,
backtest and summary number then reads the held-out AUROC of those cells, once.

**One joint bootstrap of the held-out patients.** Every cell (and every baseline) scored the same
held-out examples, so their AUROCs share noise. Each resample draws held-out patients with
replacement and recomputes every forecast's AUROC on it (:func:`ehrscale.probe.metrics.auroc_draws`);
every law is refitted on each resample. Per task:

* **Frontier.** The tuning-selected cells' held-out AUROC at each budget, fitted as the saturating
  power law ``AUROC(C) = A - k (C / C_ref)^(-gamma)`` (A, k in [0, 1], gamma in [0, 3]; C_ref the
  geometric mean budget) by least squares weighted by each point's bootstrap standard error.
  Intervals: the joint bootstrap, refitted. A parameter at a bound of its box, or whose interval
  reaches one, is **not identified** (its value is then the box's, not the data's), and so is a
  crossover with a baseline that needs it.
* **Crossover.** The compute at which the frontier reaches a baseline's AUROC, per resample, when
  the frontier's parameters are identified and it passes the baseline in nearly every resample.
* **Two-stage law.** Across the budgets' chosen cells, AUROC as a linear function of validation loss
  (``AUROC = a + b * loss``, the OLMo model-ladder's second stage), weighted least squares; intervals
  resample the cells and, in the same resample, the held-out patients. Fitted to the chosen cells, as
  the frontier is: a line through every cell sits below the cells tuning chose, so it would predict them
  low. With L(N, D) from the loss fits it predicts AUROC for any (N, D) (:func:`two_stage_at`).
* **Backtests.** Each law fitted without the largest budget predicts the held-out AUROC of that
  budget's tuning-selected cell: the frontier from compute alone (>= 3 smaller budgets, else "not
  estimable"), the two-stage map from that cell's loss (a new cell's prediction: each resample adds a
  cell's own deviation from the line, the residual scatter beyond held-out noise). Each resample refits
  the law and rescores the observed cell on the same patients, so the interval of the error (predicted -
  observed) holds both the law's uncertainty and the observation's; the observation is **consistent**
  when it contains 0.
* **Rise.** The tuning-selected cells of the smallest and largest budgets: whether the larger's
  held-out interval lies above the smaller's (strict), and the paired interval of the difference
  from the joint bootstrap (beyond it when its lower bound is above 0).
* **Baselines and what the model adds.** The three count baselines (:mod:`ehrscale.probe.baseline`)
  beside the frontier, and each tuning-selected cell's gain of embedding + counts over counts alone
  on the same examples (the probe record's ``combined``), with its paired interval.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.intervals import interval, jsonable, percentile_interval
from ehrscale.probe.metrics import auroc_draws

SCHEMA = "ehrscale.utility/2"
PAPER = {"task": "ICU mortality", "auroc_small": 0.68, "auroc_large": 0.75, "params_small": 1e6, "params_large": 28e6,
         "reference": "Zhang et al. 2025, arXiv:2505.22964: AUROC rose from about 0.68 to 0.75 between 1M and 28M "
                      "parameters, then levelled off"}
Z95 = 3.92  # a 95 % normal interval is 3.92 standard errors wide
BASELINES = ("full_history", "same_examples", "same_window")
BOXES = {"A": (0.0, 1.0), "k": (0.0, 1.0), "gamma": (0.0, 3.0)}  # the frontier's parameter box
KEYS = ["subject_id", "prediction_time"]


# --------------------------------------------------------------------------- inputs


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise EhrscaleError(f"cannot read probe record {path}: {err}") from err


def utility_points(points: pd.DataFrame, probe_files) -> pd.DataFrame:
    """One row per (cell, task) that was scored: cell, task, budget, n, tokens, loss, auroc, lo, hi, se,
    tuning_auroc, and the combined probe's gain over counts (gain, gain_lo, gain_hi; NaN without it)."""
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
            gain = (r.get("combined") or {}).get("gain_over_counts") or {}
            rows.append({"cell": cell, "task": task, "budget": float(p["budget"]), "n": float(p["n"]),
                         "tokens": float(p["tokens"]), "loss": float(p["loss"]), "auroc": a["estimate"],
                         "lo": a.get("lo", math.nan), "hi": a.get("hi", math.nan), "tuning_auroc": r["tuning_auroc"],
                         "gain": gain.get("estimate", math.nan), "gain_lo": gain.get("lo", math.nan),
                         "gain_hi": gain.get("hi", math.nan), "predictions": str(Path(path).parent / f"{task}.predictions.parquet")})
    cols = ["cell", "task", "budget", "n", "tokens", "loss", "auroc", "lo", "hi", "tuning_auroc", "gain", "gain_lo",
            "gain_hi", "predictions"]
    df = pd.DataFrame(rows, columns=cols)
    df["se"] = ((df["hi"] - df["lo"]) / Z95).clip(lower=1e-3).fillna(0.02)
    return df


def read_baselines(files) -> dict:
    """{task: (record, its directory)} of the baseline records."""
    return {(r := _read(Path(p))).get("task", Path(p).stem): (r, Path(p).parent) for p in files}


def _baseline_predictions(directory: Path, task: str, variant: str) -> Path:
    return directory / (f"{task}.predictions.parquet" if variant == "full_history" else f"{task}.{variant}.predictions.parquet")


@dataclass
class HeldOut:
    """One task's held-out examples, every forecast of them, and their AUROCs in joint patient resamples."""

    y: np.ndarray
    groups: np.ndarray
    names: list[str]
    draws: np.ndarray  # (resamples, forecasts)

    def column(self, name: str) -> np.ndarray:
        return self.draws[:, self.names.index(name)]


def held_out(forecasts: dict[str, Path], n_boot: int, seed: int) -> HeldOut:
    """Read the forecasts' held-out predictions (all of the same examples) and resample them jointly."""
    from ehrscale.probe.linear import read_predictions

    names, probs, base = list(forecasts), [], None
    for name in names:
        df = read_predictions(forecasts[name]).sort_values(KEYS).reset_index(drop=True)
        if base is None:
            base = df
        elif len(df) != len(base) or not (df[KEYS].to_numpy() == base[KEYS].to_numpy()).all() \
                or not (df["boolean_value"].to_numpy() == base["boolean_value"].to_numpy()).all():
            raise EhrscaleError(f"{forecasts[name]} and {forecasts[names[0]]}: the held-out examples differ")
        probs.append(df["predicted_boolean_probability"].to_numpy(float))
    y, groups = base["boolean_value"].to_numpy(bool), base["subject_id"].to_numpy()
    return HeldOut(y, groups, names, auroc_draws(y, np.array(probs), groups, n_boot, seed))


def best_per_budget(df: pd.DataFrame) -> pd.DataFrame:
    """The cell that represents each budget: the highest tuning AUROC (ties: lower loss, then cell id)."""
    order = df.sort_values(["budget", "tuning_auroc", "loss", "cell"], ascending=[True, False, True, True])
    return order.groupby("budget", sort=True).head(1).reset_index(drop=True)


# --------------------------------------------------------------------------- identification


def identify(rec: dict, box: tuple[float, float]) -> dict:
    """``rec`` marked identified, or not (with the reason) when its estimate sits at a bound of its box
    or its interval reaches one: then the box, not the data, sets it."""
    low, high = box
    tol = 1e-3 * (high - low)  # L-BFGS-B stops ~1e-5 short of a bound it presses on (readmission's k: 2.7e-4, 1.6e-5)
    est, lo, hi = rec.get("estimate"), rec.get("ci_low"), rec.get("ci_high")
    reason = None
    if est is None:
        reason = "not fitted"
    elif est <= low + tol or est >= high - tol:
        reason = f"the estimate sits at a bound of [{low:g}, {high:g}]"
    elif lo is None or hi is None:
        reason = "no interval"
    elif lo <= low + tol or hi >= high - tol:
        reason = f"the interval reaches a bound of [{low:g}, {high:g}]"
    return rec | {"identified": reason is None} | ({"reason": reason} if reason else {})


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


@dataclass
class Frontier:
    """A fitted frontier: its record, its parameters and one refit per resample (NaN rows where none)."""

    record: dict
    params: np.ndarray | None = None
    boots: np.ndarray | None = None

    def at(self, budgets) -> tuple[np.ndarray, np.ndarray]:
        """The law at ``budgets``: the point prediction and one prediction per resample."""
        z = np.log(np.atleast_1d(np.asarray(budgets, float))) - self.record["log_c_ref"]
        return saturating(z, *self.params), np.array([saturating(z, *b) for b in self.boots])


def fit_utility_frontier(budget, auroc, se, draws=None, level: float = 0.95) -> Frontier:
    """Fit AUROC(C) = A - k (C/C_ref)^-gamma to the budgets' AUROCs; ``draws`` (resamples x points): the
    same points' AUROCs in joint resamples of the held-out patients, each refitted for the intervals."""
    c, y, s = (np.asarray(v, float) for v in (budget, auroc, se))
    out: dict = {"model": "AUROC(C) = A - k * (C / C_ref)^(-gamma)", "n_points": int(len(c))}
    if len(c) < 3:
        return Frontier(out | {"fitted": False, "reason": f"not estimable: {len(c)} budget(s) for 3 parameters"})
    log_ref = float(np.mean(np.log(c)))
    z = np.log(c) - log_ref
    p = _fit_saturating(z, y, s)
    if p is None:
        return Frontier(out | {"fitted": False, "reason": "least squares failed"})
    draws = np.zeros((0, len(c))) if draws is None else np.asarray(draws, float)
    boots = np.array([_fit_saturating(z, row, s) if np.isfinite(row).all() else np.full(3, np.nan) for row in draws])
    boots = boots.reshape(-1, 3)
    out |= {"fitted": True, "log_c_ref": log_ref, "params": [float(v) for v in p], "df_resid": int(len(c) - 3),
            "bootstrap": {"draws": int(len(draws)), "succeeded": int(np.isfinite(boots).all(axis=1).sum()),
                          "method": "joint resamples of the held-out patients, refitted"}}
    for i, name in enumerate(("A", "k", "gamma")):
        out[name] = identify(percentile_interval(p[i], boots[:, i], level), BOXES[name])
    return Frontier(out, p, boots)


def frontier_band(fit: dict, budgets, level: float = 0.95) -> np.ndarray:
    """The fitted frontier at ``budgets`` (for figures)."""
    z = np.log(np.asarray(budgets, float)) - fit["log_c_ref"]
    return saturating(z, *fit["params"])


def crossover(fr: Frontier, base: float, base_draws: np.ndarray, level: float) -> dict:
    """The compute at which the frontier reaches the baseline's AUROC, with its interval; not identified
    unless the frontier's parameters are and it passes the baseline in nearly every resample."""
    rec = fr.record
    if not rec.get("fitted"):
        return {"identified": False, "reason": rec.get("reason", "frontier not fitted")}
    loose = [k for k in ("A", "k", "gamma") if not rec[k]["identified"]]
    if loose:
        return {"identified": False, "reason": f"the frontier's {', '.join(loose)} not identified"}

    def at(p, b):
        a, k, g = p
        with np.errstate(all="ignore"):
            return np.where((a > b) & (k > 0) & (g > 0), rec["log_c_ref"] - np.log((a - b) / k) / g, np.nan)

    log_c = float(at(fr.params, base))
    draws = at(fr.boots.T, np.asarray(base_draws, float))
    reach = float(np.mean(np.isfinite(draws)))
    if not np.isfinite(log_c) or reach < (1 + level) / 2:
        return {"identified": False, "reason": f"the frontier's ceiling passes the baseline in {100 * reach:.0f} % of resamples"}
    r = percentile_interval(log_c, draws, level)
    return {"identified": True, "estimate": math.exp(log_c), "ci_low": math.exp(r["ci_low"]),
            "ci_high": math.exp(r["ci_high"]), "baseline_auroc": base}


# --------------------------------------------------------------------------- two-stage law


def _wls_line(x, y, w) -> tuple[float, float]:
    W = np.sqrt(w)
    b, a = np.linalg.lstsq(np.c_[x * W, W], y * W, rcond=None)[0]
    return float(a), float(b)


def fit_two_stage(loss, auroc, se, draws=None, level: float = 0.95, seed: int = 0) -> dict:
    """AUROC = a + b * loss across cells (weighted by 1/se^2). Each resample draws cells with replacement
    and takes their AUROCs from that resample's row of ``draws`` (joint held-out resamples; none: the
    observed AUROCs), so the interval holds both the scatter of cells and the shared held-out noise."""
    x, y, s = (np.asarray(v, float) for v in (loss, auroc, se))
    out: dict = {"model": "AUROC = a + b * loss", "n_cells": int(len(x))}
    if len(x) < 3 or np.ptp(x) == 0:
        return out | {"fitted": False, "reason": f"not estimable: {len(x)} cell(s) with distinct losses; need 3"}
    w = 1 / s**2
    a, b = _wls_line(x, y, w)
    rng = np.random.default_rng(seed)
    rows = np.asarray(draws, float) if draws is not None else np.tile(y, (1000, 1))
    boots = np.full((len(rows), 2), np.nan)
    for r, row in enumerate(rows):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.isfinite(row[i]).all():
            boots[r] = _wls_line(x[i], row[i], w[i])
    resid = y - (a + b * x)
    rmse = float(np.sqrt(np.mean(resid**2)))
    # a cell's own deviation from the line: the residual scatter beyond the cells' held-out noise
    deviation = math.sqrt(max(np.sum(w * resid**2) / max(len(x) - 2, 1) / np.mean(w) - float(np.mean(s**2)), 0.0))
    return out | {"fitted": True, "params": [a, b], "a": percentile_interval(a, boots[:, 0], level),
                  "b": percentile_interval(b, boots[:, 1], level), "boot_params": boots.tolist(),
                  "rmse": rmse, "deviation_sd": deviation}


def two_stage_draws(fit: dict, loss, seed: int | None = None) -> tuple[float, np.ndarray]:
    """The map at ``loss``: the point prediction and one per resample; with ``seed``, a new cell's (each
    resample adds a cell's own deviation from the line, ``deviation_sd``)."""
    a, b = fit["params"]
    boots = np.asarray(fit["boot_params"], float)
    draws = boots[:, 0] + boots[:, 1] * float(loss)
    if seed is not None:
        draws = draws + np.random.default_rng(seed).normal(0.0, fit["deviation_sd"], len(draws))
    return a + b * float(loss), draws


def two_stage_predict(fit: dict, loss, level: float = 0.95) -> dict:
    """Predicted AUROC at ``loss`` with its interval."""
    point, draws = two_stage_draws(fit, loss)
    return percentile_interval(point, draws, level)


def two_stage_at(fit: dict, scaling: dict | None, n: float, d: float, level: float = 0.95) -> dict | None:
    """AUROC predicted for any (N, D): the loss law L(N, D) (Approach 3 of scaling.json) then the map."""
    from ehrscale.fit.law import predict

    try:
        p = [scaling["approach3"]["params"][k]["estimate"] for k in ("E", "A", "B", "alpha", "beta")]
        loss = float(predict(p, np.array([n], float), np.array([d], float))[0])
    except (KeyError, TypeError, ValueError):
        return None
    return {"n": n, "tokens": d, "loss": loss, "auroc": two_stage_predict(fit, loss, level)}


# --------------------------------------------------------------------------- per task


def _consistency(predicted: float, pred_draws, observed: float, obs_draws, level: float) -> dict:
    """Predicted against observed, each with its interval, and the error's: consistent when it holds 0."""
    err = percentile_interval(predicted - observed, np.asarray(pred_draws) - np.asarray(obs_draws), level)
    inside = None if err["ci_low"] is None else bool(err["ci_low"] <= 0 <= err["ci_high"])
    return {"estimable": True, "predicted": percentile_interval(predicted, pred_draws, level),
            "observed": percentile_interval(observed, obs_draws, level), "error": err, "observed_in_interval": inside}


def _backtest(df: pd.DataFrame, sel: pd.DataFrame, ho: HeldOut, level: float, seed: int) -> dict:
    budgets = sorted(sel["budget"])
    if len(budgets) < 2:
        return {"frontier": {"estimable": False, "reason": "one budget"}, "two_stage": {"estimable": False, "reason": "one budget"}}
    top = sel.iloc[-1]
    observed, obs_draws = float(top["auroc"]), ho.column(top["cell"])
    out = {"budget": float(top["budget"]), "cell": top["cell"], "observed": float(observed)}
    fit_on = sel.iloc[:-1]
    fr = fit_utility_frontier(fit_on["budget"], fit_on["auroc"], fit_on["se"],
                              np.column_stack([ho.column(c) for c in fit_on["cell"]]), level)
    if fr.record.get("fitted"):
        point, draws = fr.at([top["budget"]])
        out["frontier"] = _consistency(float(point[0]), draws[:, 0], observed, obs_draws, level)
    else:
        out["frontier"] = {"estimable": False, "reason": fr.record["reason"] + " (after leaving out the largest budget)"}
    ts = fit_two_stage(fit_on["loss"], fit_on["auroc"], fit_on["se"],
                       np.column_stack([ho.column(c) for c in fit_on["cell"]]), level, seed)
    if ts.get("fitted"):
        point, draws = two_stage_draws(ts, top["loss"], seed)
        out["two_stage"] = _consistency(point, draws, observed, obs_draws, level)
    else:
        out["two_stage"] = {"estimable": False, "reason": ts["reason"]}
    return out


def _rise(sel: pd.DataFrame, ho: HeldOut, level: float) -> dict:
    small, large = sel.iloc[0], sel.iloc[-1]
    out = {"smallest_budget": float(small["budget"]), "largest_budget": float(large["budget"]),
           "smallest": interval(small["auroc"], small["lo"], small["hi"]) | {"cell": small["cell"]},
           "largest": interval(large["auroc"], large["lo"], large["hi"]) | {"cell": large["cell"]},
           "rise": float(large["auroc"] - small["auroc"]),
           "beyond_intervals": bool(len(sel) > 1 and large["lo"] > small["hi"]), "paired": None}
    if small["cell"] != large["cell"]:
        d = percentile_interval(out["rise"], ho.column(large["cell"]) - ho.column(small["cell"]), level)
        out["paired"] = d | {"beyond_interval": bool(d["ci_low"] is not None and d["ci_low"] > 0), "n": int(len(ho.y))}
    return out


def _baselines(record: dict | None, ho: HeldOut, fr: Frontier, level: float) -> dict:
    out = {}
    for variant, rec in ((record or {}).get("variants") or {}).items():
        if rec.get("status") != "ok":
            out[variant] = {"status": "skipped", "reason": rec.get("reason")}
            continue
        a = rec["held_out"]["auroc"]
        entry = {"status": "ok", "features": rec.get("features"),
                 "auroc": interval(a["estimate"], a.get("lo", math.nan), a.get("hi", math.nan))}
        if f"baseline:{variant}" in ho.names:
            entry["crossover"] = crossover(fr, a["estimate"], ho.column(f"baseline:{variant}"), level)
        out[variant] = entry
    return out


def task_utility(df: pd.DataFrame, baseline: dict | None, ho: HeldOut, scaling: dict | None, level: float,
                 seed: int) -> dict:
    sel = best_per_budget(df)
    out: dict = {"n_cells": int(len(df)), "budgets": sel["budget"].tolist(), "selected_on": "tuning AUROC",
                 "frontier_points": sel[["budget", "cell", "n", "loss", "auroc", "lo", "hi", "tuning_auroc"]].to_dict("records")}
    fr = fit_utility_frontier(sel["budget"], sel["auroc"], sel["se"], np.column_stack([ho.column(c) for c in sel["cell"]]),
                              level)
    out["frontier"] = fr.record
    ts = fit_two_stage(sel["loss"], sel["auroc"], sel["se"], np.column_stack([ho.column(c) for c in sel["cell"]]), level, seed)
    out["two_stage"] = {k: v for k, v in ts.items() if k != "boot_params"}
    if ts.get("fitted") and scaling:  # L(N, D) then the map, at each frontier cell's (N, D)
        at = [two_stage_at(ts, scaling, float(r["n"]), float(r["tokens"]), level) for _, r in sel.iterrows()]
        out["two_stage_at_frontier_cells"] = [a for a in at if a is not None] or None
    out["backtest"] = _backtest(df, sel, ho, level, seed)
    out["rise"] = _rise(sel, ho, level)
    out["baselines"] = _baselines(baseline, ho, fr, level)
    out["combined"] = [{"budget": r["budget"], "cell": r["cell"], "gain_over_counts": interval(r["gain"], r["gain_lo"], r["gain_hi"])
                        | {"beyond_interval": bool(r["gain_lo"] > 0)}} for _, r in sel.iterrows() if np.isfinite(r["gain"])]
    return out


def fit_utility(points: pd.DataFrame, probe_files, baseline_files=(), scaling: dict | None = None,
                level: float = 0.95, seed: int = 0, draws: int = 1000) -> tuple[dict, pd.DataFrame]:
    """The utility record (utility.json) and the per-(cell, task) table. ``draws``: joint resamples of
    the held-out patients (every law is refitted on each)."""
    df = utility_points(points, probe_files)
    baselines = read_baselines(baseline_files)
    tasks = sorted(set(df["task"]) | set(baselines))
    result: dict = {"schema": SCHEMA, "ci_level": level, "paper": PAPER, "selection": "tuning AUROC",
                    "bootstrap": {"draws": int(draws), "seed": int(seed), "unit": "held-out patients, jointly for every forecast"},
                    "tasks": {}, "skipped": {}}
    for path in probe_files:
        rec = _read(Path(path))
        for task, r in rec.get("tasks", {}).items():
            if r.get("status") != "ok":
                result["skipped"].setdefault(task, []).append({"cell": rec.get("cell"), "reason": r.get("reason")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for task in tasks:
            part = df[df["task"] == task]
            record, directory = baselines.get(task, (None, None))
            if part.empty:
                result["tasks"][task] = {"n_cells": 0}
                continue
            forecasts = dict(zip(part["cell"], map(Path, part["predictions"])))
            for variant, rec in ((record or {}).get("variants") or {}).items():
                if rec.get("status") == "ok":
                    forecasts[f"baseline:{variant}"] = _baseline_predictions(directory, task, variant)
            ho = held_out(forecasts, draws, seed)
            result["tasks"][task] = task_utility(part, record, ho, scaling, level, seed)
    ts = result["tasks"].values()
    result["n_tasks_rising"] = sum(bool(t.get("rise", {}).get("beyond_intervals")) for t in ts)
    result["n_tasks_rising_paired"] = sum(bool((t.get("rise", {}).get("paired") or {}).get("beyond_interval")) for t in ts)
    return jsonable(result), df.drop(columns=["predictions"])
