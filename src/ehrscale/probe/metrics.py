"""Held-out metrics of a probability forecast with stratified bootstrap intervals.

The bootstrap resamples positives and negatives separately (so n and the prevalence are those
of the sample in every resample). A resample only repeats the sample's own scores, so it is
summarised by how many times each distinct score is drawn as a positive and as a negative
(:func:`score_counts`); AUROC (Mann-Whitney, ties counted half), average precision (sklearn's
step-wise definition, ties grouped) and the Brier score of every resample then follow from
cumulative sums over the distinct scores (:func:`metrics_from_counts`): no per-resample sort.
``n`` is exact; the prevalence gets a Wilson interval (the stratified bootstrap holds it fixed).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score


def score_counts(score_index: np.ndarray, draws: np.ndarray, n_scores: int) -> np.ndarray:
    """(resamples, n_scores): how often each distinct score is drawn in each row of ``draws``
    (example indices); ``score_index[i]`` is example i's rank among the distinct scores."""
    b = draws.shape[0]
    flat = (np.arange(b)[:, None] * n_scores + score_index[draws]).ravel()
    return np.bincount(flat, minlength=b * n_scores).reshape(b, n_scores)


def metrics_from_counts(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, average precision and Brier score of each resample, from its counts of positives
    (``pos``) and negatives (``neg``) at each distinct score (``scores``, ascending)."""
    pos, neg = pos.astype(float), neg.astype(float)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    neg_below = np.cumsum(neg, 1) - neg
    auroc = (pos * (neg_below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    pos_desc, neg_desc = pos[:, ::-1], neg[:, ::-1]  # thresholds from the highest score down
    tp, called = np.cumsum(pos_desc, 1), np.cumsum(pos_desc + neg_desc, 1)
    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
    auprc = (pos_desc * precision).sum(1) / n_pos
    brier = (pos @ (1 - scores) ** 2 + neg @ scores**2) / (n_pos + n_neg)
    return {"auroc": auroc, "auprc": auprc, "brier": brier}


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
        scores, score_index = np.unique(p, return_inverse=True)
        pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
        stats: dict[str, list] = {"auroc": [], "auprc": [], "brier": []}
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            draws_pos, draws_neg = rng.choice(pos, (b, k)), rng.choice(neg, (b, n - k))
            m = metrics_from_counts(scores, score_counts(score_index, draws_pos, len(scores)),
                                    score_counts(score_index, draws_neg, len(scores)))
            for name, vals in stats.items():
                vals.append(m[name])
        q = [(1 - level) / 2, (1 + level) / 2]
        for name, vals in stats.items():
            lo, hi = np.quantile(np.concatenate(vals), q)
            out[name] |= {"lo": float(lo), "hi": float(hi)}
    return out


def paired_auroc_difference(y, p_a, p_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                            chunk: int = 200) -> dict:
    """AUROC(p_b) - AUROC(p_a) on the same examples, with a stratified bootstrap interval that
    resamples the examples once for both forecasts (paired: their shared noise cancels).
    ``{estimate, lo, hi, n_boot}``."""
    y = np.asarray(y, bool)
    p_a, p_b = np.asarray(p_a, float), np.asarray(p_b, float)
    n, k = len(y), int(y.sum())
    if not 0 < k < n:
        raise ValueError("a paired AUROC difference needs positives and negatives")
    out = {"estimate": float(roc_auc_score(y, p_b) - roc_auc_score(y, p_a)), "n_boot": int(n_boot)}
    if not n_boot:
        return out
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    uniq = [np.unique(p, return_inverse=True) for p in (p_a, p_b)]
    diffs = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws_pos, draws_neg = rng.choice(pos, (b, k)), rng.choice(neg, (b, n - k))
        a_b = [metrics_from_counts(scores, score_counts(index, draws_pos, len(scores)),
                                   score_counts(index, draws_neg, len(scores)))["auroc"] for scores, index in uniq]
        diffs.append(a_b[1] - a_b[0])
    lo, hi = np.quantile(np.concatenate(diffs), [(1 - level) / 2, (1 + level) / 2])
    return out | {"lo": float(lo), "hi": float(hi)}
