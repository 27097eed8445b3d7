"""``ehrscale baseline``: the no-foundation-model lines for one task, labelled by what they see.

Features: log(1 + count) of token ids before the prediction time (static prefix included,
``[TIMELINE_END]`` excluded): a sparse bag of codes, values (quantile tokens) and gaps (interval
tokens). The probe is the embeddings' own (:func:`ehrscale.probe.linear.fit_probe`), on the same
held_out examples. Three variants, so that a comparison with the model is like for like:

* ``full_history``: the whole history; train capped only by ``probe.baseline_max_train_examples``
  (default all), tuning whole: the strongest line counts can draw;
* ``same_examples``: the whole history, on exactly the probe's train and tuning examples (the
  embeddings' caps);
* ``same_window``: the probe's examples, counting only the tokens the model sees: the static
  prefix and the context window before the prediction time (the store's cut, at the model's
  context length).

The ``same_examples`` features are cached (``<task>.counts.npz``) for the probe that combines them
with each cell's embedding (what the model adds beyond counts).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ehrscale.core.files import write_json
from ehrscale.core.settings import load_settings
from ehrscale.probe.examples import probe_examples, write_counts
from ehrscale.probe.linear import fit_probe, write_predictions
from ehrscale.probe.settings import ProbeSettings
from ehrscale.tokens.store import TokenSplit, probe_spans, read_stats
from ehrscale.tokens.vocab import STATIC_PREFIX_LEN

log = logging.getLogger(__name__)

VARIANTS = {
    "full_history": "log1p token counts of the whole history; every train example",
    "same_examples": "log1p token counts of the whole history; the probe's own train and tuning examples",
    "same_window": "log1p token counts of the model's input (static prefix + the context window); the probe's examples",
}


def count_features(split: TokenSplit, subject_ids, prediction_times, vocab_size: int,
                   context_length: int | None = None) -> sp.csr_matrix:
    """log1p counts of the tokens strictly before each prediction time: the whole history, or with
    ``context_length`` only the model's input (the static prefix and the body from the cut)."""
    idx = split.index_of(subject_ids)
    if len(idx) == 0:
        return sp.csr_matrix((0, vocab_size))
    start, cut, end = probe_spans(split, idx, prediction_times, context_length or 1 << 62)
    indptr, indices, data = [0], [], []
    for a, c, e in zip(start.tolist(), cut.tolist(), end.tolist()):
        body_from = c if context_length else a + STATIC_PREFIX_LEN
        seen = np.r_[np.asarray(split.tokens[a : a + STATIC_PREFIX_LEN]), np.asarray(split.tokens[body_from:e])]
        ids, n = np.unique(seen.astype(np.int64), return_counts=True)
        indices.append(ids)
        data.append(np.log1p(n))
        indptr.append(indptr[-1] + len(ids))
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.asarray(indptr)), shape=(len(idx), vocab_size))


def _features(tokens_dir, parts: dict[str, pd.DataFrame], vocab_size: int, context_length: int | None) -> dict:
    return {s: count_features(TokenSplit(Path(tokens_dir) / s), d["subject_id"], d["prediction_time"], vocab_size,
                              context_length) for s, d in parts.items()}


def baseline_task(tokens_dir, labels_file, out_json, out_dir, settings: ProbeSettings, context_length: int) -> dict:
    """Every variant's probe of one task: the record ``out_json``, and in ``out_dir`` each variant's
    held-out predictions (``<task>.predictions.parquet`` for full_history, ``<task>.<variant>.predictions.parquet``
    otherwise) and the same_examples features (``<task>.counts.npz``)."""
    task = Path(labels_file).stem
    out_dir = Path(out_dir)
    V = int(read_stats(tokens_dir)["vocab_size"])
    examples = {"full_history": probe_examples(labels_file, tokens_dir, settings, baseline=True),
                "same_examples": probe_examples(labels_file, tokens_dir, settings)}
    variants = {}
    for name, desc in VARIANTS.items():
        df = examples["full_history" if name == "full_history" else "same_examples"]
        parts = {s: df[df["split"] == s] for s in ("train", "tuning", "held_out")}
        X = _features(tokens_dir, parts, V, context_length if name == "same_window" else None)
        y = {s: d["label"].to_numpy(bool) for s, d in parts.items()}
        fit = fit_probe(X, y, settings, parts["held_out"]["subject_id"].to_numpy())
        suffix = "" if name == "full_history" else f".{name}"
        write_predictions(out_dir / f"{task}{suffix}.predictions.parquet", parts["held_out"], fit)
        if name == "same_examples":
            keys = pd.concat([parts[s] for s in parts], ignore_index=True)
            write_counts(out_dir / f"{task}.counts.npz", keys, sp.vstack([X[s] for s in parts], format="csr"))
        variants[name] = {"features": desc, **fit.record}
        _log(task, name, fit.record)
    result = {"task": task, "kind": "count_baseline", "context_length": context_length, "variants": variants}
    write_json(out_json, result)
    return result


def _log(task: str, variant: str, rec: dict) -> None:
    if rec["status"] == "ok":
        a = rec["held_out"]["auroc"]
        log.info("%s baseline %s: AUROC %.3f [%.3f, %.3f] (C=%g)", task, variant, a["estimate"], a.get("lo", np.nan),
                 a.get("hi", np.nan), rec["C"])
    else:
        log.warning("%s baseline %s skipped: %s", task, variant, rec["reason"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", required=True, help="the token store")
    parser.add_argument("--labels", required=True, help="labels/<task>.parquet")
    parser.add_argument("--out", required=True, help="output JSON record; the predictions and counts go beside it")
    parser.add_argument("--context-length", type=int, required=True, help="the models' context length (same_window)")
    parser.add_argument("--settings", help="probe settings as JSON or @file.json")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ProbeSettings, args.settings, "probe")
    baseline_task(args.tokens, args.labels, args.out, Path(args.out).parent, settings, args.context_length)
    return 0
