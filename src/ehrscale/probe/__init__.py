"""Clinical utility: frozen models embed the labelled examples, a logistic-regression probe
scores each task (``ehrscale embed``, ``ehrscale probe``), beside a no-model baseline on
bag-of-codes counts (``ehrscale baseline``).

* :mod:`ehrscale.probe.embed`: the final hidden state (after the last norm) at the last token
  before each prediction time; one forward pass per patient window serves every prediction
  time that fits in it. Cached per cell, so probe settings never re-embed.
* :mod:`ehrscale.probe.linear`: standardize, choose the L2 strength on tuning, fit on train,
  report on held_out with stratified bootstrap intervals (:mod:`ehrscale.probe.metrics`).
* :mod:`ehrscale.probe.baseline`: the same probe on log counts of every token before the
  prediction time (the whole history, no model).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.errors import EhrscaleError


@dataclasses.dataclass
class ProbeSettings:
    """The ``probe`` config section."""

    c_values: list = dataclasses.field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
    max_iter: int = 2000
    bootstrap: int = 1000  # stratified bootstrap resamples of held_out
    seed: int = 0
    ci_level: float = 0.95
    min_positives: int = 10  # positives (and negatives) each of train, tuning and held_out needs
    device: str = "auto"  # embedding: auto | cpu | cuda | cuda:N
    batch_tokens: int = 16384  # embedding: padded tokens per forward batch (CPU: larger batches cost more, bench/probe.py)
    # Train examples per task the probe fits on, and tuning examples per task C is chosen on
    # (fixed, label-stratified subsets; null: all). held_out is always used whole, so its
    # intervals are those of the whole split. Why caps: embedding costs a forward pass per
    # example, and every example would cost more than training a small cell.
    max_train_examples: int | None = 3000
    max_tuning_examples: int | None = 1000
    # The baseline's own train cap (null: all); it uses tuning whole. The caps above save
    # embedding, which the baseline never pays (it is fitted once per task), and its ~vocab_size
    # features need far more examples than a probe's d_model: capped like the probe, it would
    # understate the no-model line. held_out, where the two are compared, is the same.
    baseline_max_train_examples: int | None = None

    def __post_init__(self) -> None:
        c = self.c_values
        if not isinstance(c, list) or len(c) < 7 or not all(isinstance(v, (int, float)) and v > 0 for v in c):
            raise EhrscaleError(f"probe.c_values must be a list of at least 7 positive numbers, got {c!r}")
        for name in ("max_train_examples", "max_tuning_examples", "baseline_max_train_examples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise EhrscaleError(f"probe.{name} must be a positive integer or null, got {v!r}")
        for name in ("max_iter", "min_positives", "batch_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise EhrscaleError(f"probe.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise EhrscaleError(f"probe.bootstrap must be a non-negative integer, got {self.bootstrap!r}")
        if not 0 < float(self.ci_level) < 1:
            raise EhrscaleError(f"probe.ci_level must be in (0, 1), got {self.ci_level!r}")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64: a fixed, well-spread hash of uint64 keys (no process salt, no RNG state)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def cap_split(examples: pd.DataFrame, split: str, max_n: int | None) -> pd.DataFrame:
    """Keep at most ``max_n`` examples of ``split``, stratified by label, the rest untouched.

    The kept ones are those with the smallest hash of (subject_id, prediction_time) within each
    label, so the subset is the same for every cell and the baseline, needs no seed, a larger
    cap keeps every example a smaller one kept, and tasks that share prediction times keep
    nearly the same ones (so they share embeddings)."""
    in_split = examples["split"].to_numpy() == split
    n = int(in_split.sum())
    if max_n is None or n <= max_n:
        return examples
    keys = _mix64(examples["subject_id"].to_numpy(np.int64).astype(np.uint64)
                  ^ _mix64(examples["prediction_time"].to_numpy(np.int64).astype(np.uint64)))
    keep = ~in_split
    labels = examples["label"].to_numpy(bool)
    for value in (False, True):
        idx = np.flatnonzero(in_split & (labels == value))
        k = int(round(max_n * len(idx) / n))
        keep[idx[np.argsort(keys[idx], kind="stable")[:k]]] = True
    return examples[keep]


def probe_examples(labels_file, tokens_dir, settings: ProbeSettings, baseline: bool = False) -> pd.DataFrame:
    """A task's examples as every probe stage reads them: the labels, their split from the token
    store, and the caps (:func:`cap_split`). held_out is always whole. Embeddings take the train
    and tuning caps; the baseline only its own train cap (``baseline_max_train_examples``)."""
    from ehrscale.probe_inputs import read_labels

    examples = read_labels(labels_file, tokens_dir)
    if baseline:
        return cap_split(examples, "train", settings.baseline_max_train_examples)
    examples = cap_split(examples, "train", settings.max_train_examples)
    return cap_split(examples, "tuning", settings.max_tuning_examples)


def load_embeddings(path) -> tuple[np.ndarray, dict, dict]:
    """(x, {task: DataFrame(row, subject_id, prediction_time, label, split)}, meta) from an embeddings file."""
    path = Path(path)
    if not path.exists():
        raise EhrscaleError(f"embeddings not found: {path}")
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        splits = [str(s) for s in z["splits"]]
        tasks = {}
        for t in meta["tasks"]:
            tasks[t] = pd.DataFrame({k: z[f"{t}__{k}"] for k in ("row", "subject_id", "prediction_time", "label", "split")})
            tasks[t]["split"] = [splits[i] for i in tasks[t]["split"]]
        return z["x"], tasks, meta
