"""Held-out metrics of a probability forecast with patient-clustered bootstrap intervals.

A patient often contributes several examples (admissions, prediction times), and their errors
are correlated, so the bootstrap resamples **patients** with replacement and keeps all of a drawn
patient's examples (:func:`cluster_weights`; with no groups, each example is its own cluster).
A resample only repeats the sample's own scores, so it is summarised by how many times each
distinct score is drawn as a positive and as a negative; AUROC (Mann-Whitney, ties counted half),
average precision (sklearn's step-wise definition, ties grouped) and the Brier score of every
resample then follow from cumulative sums over the distinct scores (:func:`metrics_from_counts`):
no per-resample sort. Paired differences (:func:`paired_auroc_difference`) and the utility laws'
joint bootstrap over many cells (:func:`auroc_draws`) use the same draws for every forecast, so the
noise the forecasts share cancels.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import average_precision_score, roc_auc_score


def cluster_weights(groups, n_boot: int, seed: int = 0, chunk: int = 200):
    """Yield (b, n) arrays, b <= chunk rows per block: how many times each of the n examples is in a
    resample that draws whole clusters (``groups``, e.g. subject ids) with replacement."""
    _, cluster = np.unique(np.asarray(groups), return_inverse=True)
    n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_clusters, (b, n_clusters))
        flat = (np.arange(b)[:, None] * n_clusters + draws).ravel()
        counts = np.bincount(flat, minlength=b * n_clusters).reshape(b, n_clusters)
        yield counts[:, cluster]


class ScoreCounts:
    """One forecast's distinct scores and, for the positives and the negatives, a one-hot map from
    example to distinct score, so a block of resample weights becomes per-score counts in one product."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        self.values, index = np.unique(p, return_inverse=True)
        self.pos, self.neg = np.flatnonzero(y), np.flatnonzero(~y)
        m = len(self.values)
        self.onehot = {k: sp.csr_matrix((np.ones(len(ix)), (np.arange(len(ix)), index[ix])), shape=(len(ix), m))
                       for k, ix in (("pos", self.pos), ("neg", self.neg))}

    def counts(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per resample (rows of example weights ``w``): positives and negatives at each distinct score."""
        pos = (self.onehot["pos"].T @ w[:, self.pos].T).T
        neg = (self.onehot["neg"].T @ w[:, self.neg].T).T
        return np.asarray(pos, float), np.asarray(neg, float)

    def auroc(self, w: np.ndarray) -> np.ndarray:
        """AUROC of each resample (Mann-Whitney, ties half): the only metric the utility laws need."""
        pos, neg = self.counts(w)
        neg_below = np.cumsum(neg, 1) - neg
        with np.errstate(invalid="ignore", divide="ignore"):
            return (pos * (neg_below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))

    def metrics(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """AUROC, AUPRC and Brier of each resample whose example weights are the rows of ``w``."""
        pos, neg = self.counts(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return metrics_from_counts(self.values, pos, neg)


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


def _interval(samples: np.ndarray, level: float) -> dict:
    ok = samples[np.isfinite(samples)]  # a resample with no positive (or no negative) has no AUROC
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return {"lo": float(lo), "hi": float(hi)}


def binary_metrics(y, p, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95, chunk: int = 200) -> dict:
    """AUROC, AUPRC, Brier, n and prevalence of held-out (y, p), each {estimate, lo, hi}; the intervals
    resample ``groups`` (the examples' patients; None: each example alone)."""
    y = np.asarray(y, bool)
    p = np.asarray(p, float)
    n, k = len(y), int(y.sum())
    out = {
        "auroc": {"estimate": float(roc_auc_score(y, p))},
        "auprc": {"estimate": float(average_precision_score(y, p))},
        "brier": {"estimate": float(np.mean((p - y) ** 2))},
        "n": {"estimate": n, "lo": n, "hi": n},
        "prevalence": {"estimate": k / n},
    }
    if n_boot:
        groups = np.arange(n) if groups is None else np.asarray(groups)
        scores = ScoreCounts(y, p)
        stats: dict[str, list] = {"auroc": [], "auprc": [], "brier": [], "prevalence": []}
        for w in cluster_weights(groups, n_boot, seed, chunk):
            m = scores.metrics(w)
            m["prevalence"] = w[:, y].sum(1) / w.sum(1)
            for name, vals in stats.items():
                vals.append(m[name])
        for name, vals in stats.items():
            out[name] |= _interval(np.concatenate(vals), level)
        out["bootstrap"] = {"n_boot": int(n_boot), "clusters": int(len(np.unique(groups))),
                            "method": "percentile, resampling patients with replacement"}
    return out


def paired_auroc_difference(y, p_a, p_b, groups=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                            chunk: int = 200) -> dict:
    """AUROC(p_b) - AUROC(p_a) on the same examples, with a bootstrap interval that resamples the
    patients (``groups``) once for both forecasts (paired: their shared noise cancels).
    ``{estimate, lo, hi, n_boot}``."""
    y = np.asarray(y, bool)
    p_a, p_b = np.asarray(p_a, float), np.asarray(p_b, float)
    n, k = len(y), int(y.sum())
    if not 0 < k < n:
        raise ValueError("a paired AUROC difference needs positives and negatives")
    out = {"estimate": float(roc_auc_score(y, p_b) - roc_auc_score(y, p_a)), "n_boot": int(n_boot)}
    if not n_boot:
        return out
    groups = np.arange(n) if groups is None else np.asarray(groups)
    a, b = ScoreCounts(y, p_a), ScoreCounts(y, p_b)
    diffs = [b.auroc(w) - a.auroc(w) for w in cluster_weights(groups, n_boot, seed, chunk)]
    return out | _interval(np.concatenate(diffs), level)


def auroc_draws(y, forecasts: np.ndarray, groups, n_boot: int, seed: int = 0, chunk: int = 200) -> np.ndarray:
    """(n_boot, n_forecasts): each forecast's AUROC (rows of ``forecasts``, all on the examples ``y``)
    in the same patient resamples, for laws fitted across many cells that share one held-out set."""
    y = np.asarray(y, bool)
    scores = [ScoreCounts(y, np.asarray(f, float)) for f in forecasts]
    blocks = [np.column_stack([s.auroc(w) for s in scores]) for w in cluster_weights(groups, n_boot, seed, chunk)]
    return np.concatenate(blocks) if blocks else np.zeros((0, len(scores)))
