"""``ehrscale baseline``: the no-foundation-model line for one task.

Features: log(1 + count) of every token id in the patient's whole history strictly before the
prediction time (static prefix included, ``[TIMELINE_END]`` excluded), a sparse bag of codes,
values (quantile tokens) and gaps (interval tokens). The probe is the same as for embeddings
(:func:`ehrscale.probe.linear.fit_probe`), on the same held_out examples; train (capped only by
``probe.baseline_max_train_examples``, default all) and tuning are whole, not the embeddings' caps.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ehrscale.core.files import write_json
from ehrscale.core.settings import load_settings
from ehrscale.probe.examples import probe_examples
from ehrscale.probe.linear import fit_probe, write_predictions
from ehrscale.probe.settings import ProbeSettings
from ehrscale.tokens.store import TokenSplit, read_stats, to_us
from ehrscale.tokens.vocab import STATIC_PREFIX_LEN

log = logging.getLogger(__name__)


def count_features(split: TokenSplit, subject_ids, prediction_times, vocab_size: int) -> sp.csr_matrix:
    """log1p counts of the tokens strictly before each prediction time (whole history)."""
    idx = split.index_of(subject_ids)
    times = np.atleast_1d(to_us(prediction_times))
    indptr, indices, data = [0], [], []
    for i, t in zip(idx.tolist(), times.tolist()):
        a, b = int(split.offsets[i]), int(split.offsets[i + 1])
        end = a + STATIC_PREFIX_LEN + int(np.searchsorted(np.asarray(split.times[a + STATIC_PREFIX_LEN : b - 1]), t, side="left"))
        ids, n = np.unique(np.asarray(split.tokens[a:end], np.int64), return_counts=True)
        indices.append(ids)
        data.append(np.log1p(n))
        indptr.append(indptr[-1] + len(ids))
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return sp.csr_matrix((cat(data, np.float64), cat(indices, np.int64), np.asarray(indptr)), shape=(len(idx), vocab_size))


def baseline_task(tokens_dir, labels_file, out_json, out_predictions, settings: ProbeSettings) -> dict:
    task = Path(labels_file).stem
    df = probe_examples(labels_file, tokens_dir, settings, baseline=True)
    V = int(read_stats(tokens_dir)["vocab_size"])
    parts = {s: df[df["split"] == s] for s in ("train", "tuning", "held_out")}
    X = {s: count_features(TokenSplit(Path(tokens_dir) / s), d["subject_id"], d["prediction_time"], V)
         for s, d in parts.items()}
    y = {s: d["label"].to_numpy(bool) for s, d in parts.items()}
    rec, p = fit_probe(X, y, settings)
    write_predictions(out_predictions, parts["held_out"], p)
    result = {"task": task, "kind": "count_baseline", "features": "log1p token counts, whole history", **rec}
    write_json(out_json, result)
    if rec["status"] == "ok":
        a = rec["held_out"]["auroc"]
        log.info("%s baseline: AUROC %.3f [%.3f, %.3f] (C=%g)", task, a["estimate"], a.get("lo", np.nan), a.get("hi", np.nan), rec["C"])
    else:
        log.warning("%s baseline skipped: %s", task, rec["reason"])
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", required=True, help="the token store")
    parser.add_argument("--labels", required=True, help="labels/<task>.parquet")
    parser.add_argument("--out", required=True, help="output JSON record")
    parser.add_argument("--predictions", required=True, help="output held-out predictions parquet")
    parser.add_argument("--settings", help="probe settings as JSON or @file.json")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ProbeSettings, args.settings, "probe")
    baseline_task(args.tokens, args.labels, args.out, args.predictions, settings)
    return 0
