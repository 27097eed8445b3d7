"""Model inputs for a prediction task, without lookahead.

A probe input for (patient, prediction_time) is the patient's static prefix followed by the
patient's tokens whose timestamp is *strictly before* prediction_time, truncated from the left so
that prefix + kept tokens fit ``context_length``. Token times are non-decreasing within a patient
(intervals carry the time of the event that follows them), so the cut is one ``searchsorted``.
The ``[TIMELINE_END]`` token is never included (it would reveal that nothing follows). Because
the tokenizer places diagnoses and DRGs at the admission's dischtime, they are invisible to any
task predicted before discharge.
"""

from __future__ import annotations

import numpy as np

from ehrscale.errors import EhrscaleError
from ehrscale.tokenize import SplitTokens
from ehrscale.vocab import STATIC_PREFIX_LEN

__all__ = ["probe_input", "probe_inputs", "probe_span", "to_us", "load_task_inputs"]


def to_us(t) -> np.ndarray | int:
    """Timestamps (numpy datetime64 / pandas / int µs) -> int64 µs since epoch."""
    a = np.asarray(t)
    if np.issubdtype(a.dtype, np.datetime64):
        a = a.astype("datetime64[us]").astype(np.int64)
    elif a.dtype == object:
        a = np.asarray([np.datetime64(x, "us") for x in a.ravel()]).astype(np.int64).reshape(a.shape)
    else:
        a = a.astype(np.int64)
    return int(a) if a.ndim == 0 else a


def probe_span(split: SplitTokens, patient_index: int, prediction_time, context_length: int) -> tuple[int, int, int]:
    """(start, cut, end): the prefix is tokens[start:start+P], the body tokens[cut:end] (absolute indices)."""
    if context_length <= STATIC_PREFIX_LEN:
        raise EhrscaleError(f"context_length must exceed the static prefix ({STATIC_PREFIX_LEN}), got {context_length}")
    if not 0 <= patient_index < len(split):
        raise EhrscaleError(f"patient_index {patient_index} out of range for a split of {len(split)} subjects")
    t = to_us(prediction_time)
    a, b = int(split.offsets[patient_index]), int(split.offsets[patient_index + 1])
    body_start, body_stop = a + STATIC_PREFIX_LEN, b - 1  # exclude [TIMELINE_END]
    end = body_start + int(np.searchsorted(np.asarray(split.times[body_start:body_stop]), t, side="left"))
    cut = max(body_start, end - (context_length - STATIC_PREFIX_LEN))
    return a, cut, end


def probe_input(split: SplitTokens, patient_index: int, prediction_time, context_length: int) -> np.ndarray:
    """The patient's token ids for a prediction at ``prediction_time`` (at most ``context_length``)."""
    a, cut, end = probe_span(split, patient_index, prediction_time, context_length)
    tok = split.tokens
    return np.concatenate([np.asarray(tok[a : a + STATIC_PREFIX_LEN]), np.asarray(tok[cut:end])]).astype(np.int64)


def probe_inputs(
    split: SplitTokens,
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


def load_task_inputs(tokens_dir, labels_file, split: str, context_length: int, pad_id: int = 0,
                     padding_side: str = "right") -> dict:
    """Probe inputs and labels of one split of a task: ids, lengths, labels, subject_ids, prediction_times."""
    from pathlib import Path

    import pyarrow.parquet as pq

    labels_file = Path(labels_file)
    if not labels_file.exists():
        raise EhrscaleError(f"labels not found: {labels_file}")
    df = pq.read_table(labels_file, columns=["subject_id", "prediction_time", "boolean_value"]).to_pandas()
    st = SplitTokens.load(Path(tokens_dir) / split)
    df = df[np.isin(df["subject_id"].to_numpy(np.int64), np.asarray(st.subject_ids))]  # this split's subjects
    sids = df["subject_id"].to_numpy(np.int64)
    times = df["prediction_time"].to_numpy().astype("datetime64[us]")
    ids, lengths = probe_inputs(st, sids, times, context_length, pad_id, padding_side)
    return {"ids": ids, "lengths": lengths, "labels": df["boolean_value"].to_numpy(bool),
            "subject_ids": sids, "prediction_times": times.astype(np.int64)}
