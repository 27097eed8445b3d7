"""Held-out metrics of a probability forecast with stratified bootstrap intervals.

The bootstrap resamples positives and negatives separately (so n and the prevalence are those
of the sample in every resample); AUROC (Mann-Whitney, ties averaged), average precision
(sklearn's step-wise definition, ties grouped) and the Brier score are computed for all
resamples at once. ``n`` is exact; the prevalence gets a Wilson interval (the stratified
bootstrap holds it fixed).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import average_precision_score, roc_auc_score


def auroc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUROC of each row of (p, y) (2-D, every row with both classes)."""
    r = rankdata(p, axis=1)
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    return ((r * y).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Average precision of each row: sum over thresholds of (R_k - R_k-1) P_k, as sklearn."""
    order = np.argsort(-p, axis=1, kind="stable")
    ps = np.take_along_axis(p, order, 1)
    ys = np.take_along_axis(y, order, 1).astype(float)
    n = ps.shape[1]
    idx = np.broadcast_to(np.arange(n), ps.shape)
    is_end = np.ones_like(ps, bool)
    is_end[:, :-1] = ps[:, :-1] != ps[:, 1:]
    end = np.minimum.accumulate(np.where(is_end, idx, n)[:, ::-1], axis=1)[:, ::-1]  # last index of each tie group
    tp = np.cumsum(ys, 1)
    precision = np.take_along_axis(tp, end, 1) / (end + 1)
    return (precision * ys).sum(1) / ys.sum(1)


def wilson(k: int, n: int, level: float) -> tuple[float, float]:
    z = norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def binary_metrics(y, p, n_boot: int = 1000, seed: int = 0, level: float = 0.95, chunk: int = 200) -> dict:
    """AUROC, AUPRC, Brier, n and prevalence of held-out (y, p), each {estimate, lo, hi}."""
    y = np.asarray(y, bool)
    p = np.asarray(p, float)
    n, k = len(y), int(y.sum())
    out = {
        "auroc": {"estimate": float(roc_auc_score(y, p))},
        "auprc": {"estimate": float(average_precision_score(y, p))},
        "brier": {"estimate": float(np.mean((p - y) ** 2))},
        "n": {"estimate": n, "lo": n, "hi": n},
        "prevalence": dict(zip(("estimate", "lo", "hi"), (k / n, *wilson(k, n, level)))),
    }
    if n_boot:
        rng = np.random.default_rng(seed)
        pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
        yy = np.r_[np.ones(k, bool), np.zeros(n - k, bool)]
        stats = {"auroc": [], "auprc": [], "brier": []}
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            idx = np.concatenate([rng.choice(pos, (b, k)), rng.choice(neg, (b, n - k))], axis=1)
            pb, yb = p[idx], np.broadcast_to(yy, idx.shape)
            stats["auroc"].append(auroc_rows(yb, pb))
            stats["auprc"].append(average_precision_rows(yb, pb))
            stats["brier"].append(((pb - yb) ** 2).mean(1))
        q = [(1 - level) / 2, (1 + level) / 2]
        for name, vals in stats.items():
            lo, hi = np.quantile(np.concatenate(vals), q)
            out[name] |= {"lo": float(lo), "hi": float(hi)}
    return out
