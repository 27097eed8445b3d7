"""Model inputs for a prediction task, without lookahead: batches of the token store's
prediction-time cut (:func:`ehrscale.tokens.store.probe_span`, which also says how the cut respects
event boundaries), and the examples of a task's label file.

Label files hold exactly the MEDS label columns (``subject_id``, ``prediction_time``,
``boolean_value``; the nullable value columns are ignored): an example's split is the token
split whose subjects contain its subject_id. Because the tokenizer places diagnoses and DRGs at
the admission's dischtime, they are invisible to any task predicted before discharge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.labels.schema import LABEL_COLUMNS
from ehrscale.tokens.store import TokenSplit, probe_input, split_of_subjects, to_us

__all__ = ["probe_inputs", "read_labels", "load_task_inputs"]

def probe_inputs(
    split: TokenSplit,
    subject_ids,
    prediction_times,
    context_length: int,
    pad_id: int = 0,
    padding_side: str = "right",
) -> tuple[np.ndarray, np.ndarray]:
    """Batched probes by subject_id: (ids int64 [n, context_length] padded with ``pad_id``, lengths [n])."""
    if padding_side not in {"left", "right"}:
        raise EhrscaleError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    idx = split.index_of(subject_ids)
    times = np.atleast_1d(to_us(prediction_times))
    if len(times) != len(idx):
        raise EhrscaleError(f"{len(idx)} subject ids but {len(times)} prediction times")
    out = np.full((len(idx), context_length), pad_id, dtype=np.int64)
    lengths = np.zeros(len(idx), np.int64)
    for r, (i, t) in enumerate(zip(idx.tolist(), times.tolist())):
        x = probe_input(split, i, t, context_length)
        lengths[r] = len(x)
        if padding_side == "right":
            out[r, : len(x)] = x
        else:
            out[r, context_length - len(x) :] = x
    return out, lengths


def read_labels(labels_file, tokens_dir) -> pd.DataFrame:
    """A task's examples: subject_id, prediction_time (int64 µs), label (bool) and split (from the store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels_file = Path(labels_file)
    if not labels_file.exists():
        raise EhrscaleError(f"labels not found: {labels_file}")
    try:
        table = pq.read_table(labels_file)
    except (pa.ArrowInvalid, OSError) as err:
        raise EhrscaleError(f"cannot read labels {labels_file}: {err}") from err
    missing = [c for c in LABEL_COLUMNS if c not in table.column_names]
    if missing:
        raise EhrscaleError(f"{labels_file} lacks the MEDS label column(s) {missing}")
    df = table.select(list(LABEL_COLUMNS)).to_pandas()
    if df["boolean_value"].isna().any():
        raise EhrscaleError(f"{labels_file}: column boolean_value has nulls")
    out = pd.DataFrame({
        "subject_id": df["subject_id"].to_numpy(np.int64),
        "prediction_time": to_us(df["prediction_time"].to_numpy().astype("datetime64[us]")),
        "label": df["boolean_value"].to_numpy(bool),
    })
    out["split"] = split_of_subjects(tokens_dir, out["subject_id"].to_numpy())
    return out


def load_task_inputs(tokens_dir, labels_file, split: str, context_length: int, pad_id: int = 0,
                     padding_side: str = "right") -> dict:
    """Probe inputs and labels of one split of a task: ids, lengths, labels, subject_ids, prediction_times."""
    df = read_labels(labels_file, tokens_dir)
    df = df[df["split"] == split]
    st = TokenSplit(Path(tokens_dir) / split)
    sids = df["subject_id"].to_numpy(np.int64)
    times = df["prediction_time"].to_numpy(np.int64)
    ids, lengths = probe_inputs(st, sids, times, context_length, pad_id, padding_side)
    return {"ids": ids, "lengths": lengths, "labels": df["label"].to_numpy(bool),
            "subject_ids": sids, "prediction_times": times}
