"""Probe records and held-out predictions of cells whose true AUROC follows a known law.

Binormal scores: a positive's score is ``d`` higher on average than a negative's, with unit noise,
so the true AUROC is Phi(d / sqrt(2)). Every cell scores the same held-out examples, with noise
partly shared between cells (an example's difficulty) and partly its own; patients hold several
examples. Tuning AUROCs come from an independent tuning sample of the same law.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from ehrscale.probe.metrics import binary_metrics


def separation(auroc):
    """The binormal d with AUROC Phi(d / sqrt(2))."""
    return np.sqrt(2) * norm.ppf(np.asarray(auroc, float))


class HeldOutSet:
    """Held-out (and tuning) examples: labels, patients and the noise all cells share."""

    def __init__(self, n_patients: int = 500, per_patient: int = 3, prevalence: float = 0.3, shared: float = 0.6,
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        n = n_patients * per_patient
        self.groups = np.repeat(np.arange(n_patients), per_patient) + 10_000
        self.times = np.tile(np.arange(per_patient), n_patients).astype(np.int64) * 86_400_000_000 + 1_600_000_000_000_000
        self.y = rng.random(n) < prevalence
        self.shared = shared
        self.common = rng.standard_normal(n)
        self.tune_y = rng.random(n) < prevalence

    def scores(self, auroc: float) -> np.ndarray:
        noise = np.sqrt(self.shared) * self.common + np.sqrt(1 - self.shared) * self.rng.standard_normal(len(self.y))
        return separation(auroc) * self.y + noise

    def tuning_auroc(self, auroc: float) -> float:
        from sklearn.metrics import roc_auc_score

        scores = separation(auroc) * self.tune_y + self.rng.standard_normal(len(self.tune_y))
        return float(roc_auc_score(self.tune_y, scores))

    def write_predictions(self, path: Path, scores: np.ndarray) -> None:
        p = 1 / (1 + np.exp(-scores))
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"subject_id": self.groups, "prediction_time": self.times.astype("datetime64[us]"),
                      "boolean_value": self.y, "predicted_boolean_probability": p,
                      "predicted_boolean_value": p >= 0.5}).to_parquet(path)


def write_cell(root: Path, ho: HeldOutSet, cell: str, aurocs: dict[str, float], tuning: dict[str, float] | None = None,
               gain: dict | None = None) -> Path:
    """A probe record (probes/<cell>/metrics.json) and each task's held-out predictions, drawn at ``aurocs``;
    ``tuning``: the tasks' tuning AUROCs (default: drawn from the same law)."""
    tasks = {}
    for task, auroc in aurocs.items():
        scores = ho.scores(auroc)
        ho.write_predictions(root / cell / f"{task}.predictions.parquet", scores)
        held = binary_metrics(ho.y, scores, ho.groups, n_boot=100, seed=1)
        rec = {"status": "ok", "tuning_auroc": (tuning or {}).get(task, ho.tuning_auroc(auroc)), "held_out": held}
        if gain:
            rec["combined"] = {"status": "ok", "gain_over_counts": gain}
        tasks[task] = rec
    path = root / cell / "metrics.json"
    path.write_text(json.dumps({"cell": cell, "kind": "linear_probe", "tasks": tasks}))
    return path


def write_baseline(root: Path, ho: HeldOutSet, task: str, aurocs: dict[str, float]) -> Path:
    """baseline/<task>.json with its variants (``aurocs``: variant -> true AUROC) and their predictions."""
    variants = {}
    for variant, auroc in aurocs.items():
        scores = ho.scores(auroc)
        name = f"{task}.predictions.parquet" if variant == "full_history" else f"{task}.{variant}.predictions.parquet"
        ho.write_predictions(root / name, scores)
        variants[variant] = {"status": "ok", "features": variant, "held_out": binary_metrics(ho.y, scores, ho.groups, n_boot=100)}
    path = root / f"{task}.json"
    path.write_text(json.dumps({"task": task, "kind": "count_baseline", "variants": variants}))
    return path
