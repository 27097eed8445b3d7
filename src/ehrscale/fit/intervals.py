"""Small shared helpers: interval records and JSON-safe numbers."""

from __future__ import annotations

import contextlib
import math

import numpy as np


def single_threaded_blas():
    """Limit BLAS to one thread: the fits make thousands of tiny L-BFGS-B/BLAS calls, and a
    multi-threaded OpenBLAS spinning on a shared machine makes them 10-70x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up only (threadpoolctl comes with scikit-learn)
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def interval(estimate, low=math.nan, high=math.nan) -> dict:
    """A point estimate and its interval, NaN written as null (JSON has no NaN)."""
    return {"estimate": finite_or_none(estimate), "ci_low": finite_or_none(low), "ci_high": finite_or_none(high)}


def percentile_interval(estimate, samples, level: float) -> dict:
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return interval(estimate)
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return interval(estimate, lo, hi)


def jsonable(obj):
    """Recursively turn numpy scalars/arrays into Python types and NaN/inf into None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite_or_none(obj)
    return obj


def not_estimable(estimate, reason: str) -> dict:
    """An estimate whose interval the design cannot give: no interval, and why."""
    return interval(estimate) | {"not_estimable": reason}


def bounded_interval(rec: dict, low: float = 0.0, high: float = 1.0) -> dict:
    """``rec`` with its interval clipped to the quantity's range [low, high]; an interval as wide as the
    range itself says nothing, so it is reported as not estimable instead."""
    lo, hi = rec.get("ci_low"), rec.get("ci_high")
    if lo is None or hi is None or rec.get("not_estimable"):
        return rec
    if hi - lo >= high - low:
        return not_estimable(rec["estimate"], f"interval {lo:.3g} to {hi:.3g} is wider than the range [{low:g}, {high:g}]")
    return rec | {"ci_low": max(lo, low), "ci_high": min(hi, high)}


def format_interval(r: dict | None, prec: str = ".3f", unit: str = "", brackets: bool = False) -> str:
    """An interval record as text: ``0.540 (0.384 to 0.607)``, or ``0.54  [0.384, 0.607]`` with
    ``brackets``; ``n/a`` when there is no estimate, the estimate alone when there is no interval."""
    if not r or r.get("estimate") is None:
        return "n/a"
    s = f"{r['estimate']:{prec}}{unit}"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    if lo is not None and hi is not None:
        s += f"  [{lo:{prec}}, {hi:{prec}}]" if brackets else f" ({lo:{prec}} to {hi:{prec}})"
    return s
