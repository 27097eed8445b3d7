"""A task's examples as every probe stage reads them (capped, split from the token store), and the
embeddings file one cell writes for all its tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_path
from ehrscale.probe.inputs import read_labels
from ehrscale.probe.settings import ProbeSettings


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


def write_counts(path, examples: pd.DataFrame, matrix) -> None:
    """The count baseline's features of a task's probe examples (keys and a CSR matrix), for the
    probe that combines them with an embedding (:mod:`ehrscale.probe.linear`)."""
    m = matrix.tocsr()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, subject_id=examples["subject_id"].to_numpy(np.int64),
                     prediction_time=examples["prediction_time"].to_numpy(np.int64),
                     data=m.data, indices=m.indices, indptr=m.indptr, shape=np.asarray(m.shape, np.int64))


def read_counts(path):
    """(keys DataFrame of subject_id and prediction_time, CSR matrix) from :func:`write_counts`' file."""
    import scipy.sparse as sp

    path = Path(path)
    if not path.exists():
        raise EhrscaleError(f"count features not found: {path} (run ehrscale baseline)")
    with np.load(path) as z:
        keys = pd.DataFrame({"subject_id": z["subject_id"], "prediction_time": z["prediction_time"]})
        return keys, sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
