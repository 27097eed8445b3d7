"""``ehrscale embed``: one trained cell's embedding of every labelled example of every task.

The embedding of (patient, prediction_time) is the model's final hidden state (after the last
norm) at the last token of the probe input (:func:`ehrscale.tokens.store.probe_spans`: static prefix +
tokens strictly before the prediction time, cut at an event boundary). Examples of several
tasks that share a cut are embedded once.

**One pass serves many prediction times.** A patient's examples, sorted by their end, are
grouped into windows: a window starts at the cut of its first example and takes every later
example whose body still fits in the context. For those, the standalone cut equals the window's
(a later example whose body fits cannot have a later cut; see store), and causal attention makes
the hidden state at each position depend only on the tokens before it, so reading position
``prefix + end - cut - 1`` gives exactly the standalone embedding. Windows are sorted by length
and batched (right padding, causal) under ``batch_tokens``; no gradient; bf16 autocast on CUDA.
The last block runs only at the positions read (keys and values everywhere).

**History** (``probe.history``). ``recent`` (the default) embeds the probe input above: the last
context window before the prediction time. ``whole`` adds the earlier windows that cover the rest
of the history, going backwards from the recent cut: earlier window k has the static prefix and
the body ``[cut_k, cut_{k-1})`` (cut_0 = the recent cut), where cut_k is the first event start at
or after ``cut_{k-1} - (context_length - P)``, never before the body start
(:func:`ehrscale.tokens.store.earlier_cuts`, the store's own event-boundary rule), until the body
start is reached. Each earlier window's state is the final hidden state at its last token; an
example's embedding is the mean of its recent state and all its earlier windows' states, equally
weighted. Every earlier window ends at or before the recent cut, so nothing at or after the
prediction time is read. The chain depends only on (patient, recent cut), so all examples of a
recent window share it, and chains that meet share their windows from there: each distinct
earlier window is embedded once (one read position, its last token), batched like the recent
windows. With ``recent`` nothing of this runs and the output is what it always was.

Output ``.npz``: ``x`` (float32, [unique examples, d_model]) and, per task, ``<task>__row``
(row of ``x``), ``<task>__subject_id``, ``<task>__prediction_time`` (µs), ``<task>__label``,
``<task>__split`` (index into ``splits``); ``meta`` (JSON: counts, seconds, device; ``n_windows``
and ``n_tokens`` count the recent windows; with ``whole`` also ``history``, ``n_history_windows``
(distinct earlier windows), ``n_history_tokens`` and ``n_history_padded_tokens``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ehrscale.core.device import pick_device
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_path
from ehrscale.core.settings import load_settings
from ehrscale.extract.splits import SPLITS
from ehrscale.model.gpt import GPT, load_model
from ehrscale.probe.examples import probe_examples
from ehrscale.probe.settings import ProbeSettings
from ehrscale.tokens.store import TokenSplit, history_chains, probe_spans
from ehrscale.tokens.vocab import STATIC_PREFIX_LEN

log = logging.getLogger(__name__)


def plan_windows(split: TokenSplit, examples: pd.DataFrame, context_length: int) -> tuple[pd.DataFrame, list]:
    """``examples`` (columns index, prediction_time) with ``uid``, the row of its unique (patient, end),
    and the windows ``(prefix_start, cut, end_max, uids, positions)`` that embed them."""
    budget = context_length - STATIC_PREFIX_LEN
    start, cut, end = probe_spans(split, examples["index"].to_numpy(), examples["prediction_time"].to_numpy(), context_length)
    ex = examples.assign(start=start, cut=cut, end=end)
    uniq = ex.drop_duplicates(["index", "end"]).sort_values(["index", "end"]).reset_index(drop=True)
    windows = []
    index, ends, cuts, starts = (uniq[c].to_numpy(np.int64) for c in ("index", "end", "cut", "start"))
    bounds = np.r_[0, np.flatnonzero(np.diff(index)) + 1, len(uniq)]
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):  # one patient: rows lo..hi-1, by end
        k = lo
        while k < hi:
            c = int(cuts[k])
            m = k + int(np.searchsorted(ends[k:hi], c + budget, side="right"))
            if not (cuts[k:m] == c).all():  # guaranteed by the cut's definition; never embed a different input
                raise EhrscaleError(f"{split.path}: a window's examples do not share its cut")
            windows.append((int(starts[k]), c, int(ends[m - 1]), np.arange(k, m), STATIC_PREFIX_LEN + ends[k:m] - c - 1))
            k = m
    uid = uniq[["index", "end"]].assign(uid=np.arange(len(uniq)))
    return ex.merge(uid, on=["index", "end"], how="left"), windows


def plan_history(split: TokenSplit, ex: pd.DataFrame, windows: list, context_length: int) -> tuple[list, np.ndarray, np.ndarray]:
    """The distinct earlier windows behind the recent ``windows`` of :func:`plan_windows` (its ``ex``
    gives each window's patient), for ``history: whole``.

    Returns ``(earlier, owner, row)``: ``earlier`` in :func:`plan_windows`' window format
    ``(prefix_start, lo, hi, [row], [last position])``, one per distinct (patient, lo, hi), row r
    of the earlier states; and, for every (recent window, earlier window) pair of the chains,
    ``owner`` (index into ``windows``) and ``row`` (its earlier window's row)."""
    if not windows:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    index_of_uid = ex.drop_duplicates("uid").set_index("uid")["index"]
    idx = index_of_uid.loc[[int(w[3][0]) for w in windows]].to_numpy(np.int64)
    cut = np.array([w[1] for w in windows], np.int64)
    owner, start, lo, hi = history_chains(split, idx, cut, context_length)
    if (hi > cut[owner]).any() or (lo >= hi).any():  # the store's guarantee; never read past the recent cut
        raise EhrscaleError(f"{split.path}: an earlier window does not end before its recent cut")
    keys = np.stack([start, lo, hi], 1)
    uniq, row = np.unique(keys, axis=0, return_inverse=True)
    row = row.reshape(-1).astype(np.int64)
    earlier = [(int(a), int(c), int(e), np.array([r]), np.array([STATIC_PREFIX_LEN + e - c - 1], np.int64))
               for r, (a, c, e) in enumerate(uniq.tolist())]
    return earlier, owner.astype(np.int64), row


def pool_history(x: np.ndarray, windows: list, h: np.ndarray, owner: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Each example's mean of its recent state (``x``, by uid) and its chain's earlier states (``h``,
    by row; pairs ``owner``/``row`` from :func:`plan_history`), equally weighted, in float64."""
    n = len(windows)
    total = np.zeros((n, x.shape[1]), np.float64)
    np.add.at(total, owner, h[row].astype(np.float64))
    count = np.bincount(owner, minlength=n).astype(np.float64)
    window_of_uid = np.zeros(len(x), np.int64)
    for w, (_, _, _, uids, _) in enumerate(windows):
        window_of_uid[uids] = w
    pooled = (x.astype(np.float64) + total[window_of_uid]) / (1.0 + count[window_of_uid])[:, None]
    return pooled.astype(np.float32)


@torch.inference_mode()
def embed_windows(model: GPT, split: TokenSplit, windows: list, n_rows: int, device: torch.device,
                  batch_tokens: int) -> tuple[np.ndarray, int]:
    """Hidden states for ``n_rows`` examples from ``windows``; returns (x, padded tokens processed).

    Only the read positions go through the last block (:meth:`GPT.hidden_states_at`)."""
    d = model.cfg.d_model
    x = np.zeros((n_rows, d), np.float32)
    lengths = np.array([STATIC_PREFIX_LEN + e - c for _, c, e, _, _ in windows], np.int64)
    order = np.argsort(-lengths, kind="stable")
    use_bf16 = device.type == "cuda"
    done, total = 0, 0
    while done < len(order):
        L = int(lengths[order[done]])
        b = max(1, batch_tokens // L)
        batch = order[done : done + b]
        ids = np.zeros((len(batch), L), np.int64)
        rows, cols, uids = [], [], []
        for r, w in enumerate(batch.tolist()):
            a, c, e, w_uids, w_pos = windows[w]
            seq = np.concatenate([np.asarray(split.tokens[a : a + STATIC_PREFIX_LEN]), np.asarray(split.tokens[c:e])])
            ids[r, : len(seq)] = seq
            rows.append(np.full(len(w_pos), r))
            cols.append(w_pos)
            uids.append(w_uids)
        rows_t, cols_t = (torch.from_numpy(np.concatenate(v).astype(np.int64)).to(device) for v in (rows, cols))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            h = model.hidden_states_at(torch.from_numpy(ids).to(device), rows_t, cols_t)
        x[np.concatenate(uids)] = h.float().cpu().numpy()
        done += len(batch)
        total += ids.size
    return x, total


def embed_cell(model_path, tokens_dir, labels: dict[str, Path], out_path, settings: ProbeSettings) -> dict:
    """Embed every example of every task in ``labels`` ({task: labels parquet}) with one cell; writes the npz."""
    t0 = time.perf_counter()
    device = pick_device(settings.device, "probe.device")
    model, ck = load_model(model_path)
    model.to(device)
    ctx = model.cfg.context_length
    tasks = {t: probe_examples(p, tokens_dir, settings) for t, p in labels.items()}
    allx = pd.concat([df.assign(task=t) for t, df in tasks.items()], ignore_index=True)
    arrays: dict[str, np.ndarray] = {}
    xs, offset, n_windows, n_tokens, n_padded = [], 0, 0, 0, 0
    n_hist, n_hist_tokens, n_hist_padded = 0, 0, 0
    uid = np.full(len(allx), -1, np.int64)
    for split in SPLITS:
        part = allx[allx["split"] == split]
        if part.empty:
            continue
        st = TokenSplit(Path(tokens_dir) / split)
        part = part.assign(index=st.index_of(part["subject_id"].to_numpy()), orig=part.index)
        ex, windows = plan_windows(st, part, ctx)
        n_uid = int(ex["uid"].max()) + 1
        x, padded = embed_windows(model, st, windows, n_uid, device, settings.batch_tokens)
        if settings.history == "whole":
            earlier, owner, row = plan_history(st, ex, windows, ctx)
            h, hist_padded = embed_windows(model, st, earlier, len(earlier), device, settings.batch_tokens)
            x = pool_history(x, windows, h, owner, row)
            n_hist += len(earlier)
            n_hist_tokens += int(sum(STATIC_PREFIX_LEN + e - c for _, c, e, _, _ in earlier))
            n_hist_padded += hist_padded
        uid[ex["orig"].to_numpy()] = ex["uid"].to_numpy() + offset
        xs.append(x)
        offset += n_uid
        n_windows += len(windows)
        n_tokens += int(sum(STATIC_PREFIX_LEN + e - c for _, c, e, _, _ in windows))
        n_padded += padded
    if (uid < 0).any():
        raise EhrscaleError("internal: an example was not embedded")  # pragma: no cover
    split_code = {s: i for i, s in enumerate(SPLITS)}
    for t in tasks:
        sel = (allx["task"] == t).to_numpy()
        sub = allx[sel]
        arrays[f"{t}__row"] = uid[sel]
        arrays[f"{t}__subject_id"] = sub["subject_id"].to_numpy(np.int64)
        arrays[f"{t}__prediction_time"] = sub["prediction_time"].to_numpy(np.int64)
        arrays[f"{t}__label"] = sub["label"].to_numpy(bool)
        arrays[f"{t}__split"] = sub["split"].map(split_code).to_numpy(np.int8)
    seconds = time.perf_counter() - t0
    meta = {"cell": (ck.get("cell") or {}).get("id"), "tasks": list(tasks), "n_examples": int(len(allx)),
            "n_embedded": int(offset), "n_windows": n_windows, "n_tokens": n_tokens, "n_padded_tokens": n_padded,
            "seconds": seconds, "device": str(device), "dtype": "bfloat16" if device.type == "cuda" else "float32",
            "d_model": model.cfg.d_model, "context_length": ctx}
    if settings.history != "recent":  # recent: the meta it always had
        meta |= {"history": settings.history, "n_history_windows": n_hist, "n_history_tokens": n_hist_tokens,
                 "n_history_padded_tokens": n_hist_padded}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=np.concatenate(xs) if xs else np.zeros((0, model.cfg.d_model), np.float32),
                     splits=np.array(SPLITS), meta=np.array(json.dumps(meta)), **arrays)
    return meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a trained cell's model.pt")
    parser.add_argument("--tokens", required=True, help="the token store")
    parser.add_argument("--labels", nargs="+", required=True, help="labels/<task>.parquet files")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--settings", help="probe settings as JSON or @file.json")
    parser.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per forward batch (speed only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ProbeSettings, args.settings, "probe")
    if args.batch_tokens:
        settings.batch_tokens = int(args.batch_tokens)
    if args.threads:
        torch.set_num_threads(args.threads)
    labels = {Path(p).stem: Path(p) for p in args.labels}
    meta = embed_cell(args.model, args.tokens, labels, args.out, settings)
    log.info("embedded %d examples (%d unique, %d windows, %d tokens) on %s in %.1fs", meta["n_examples"],
             meta["n_embedded"], meta["n_windows"], meta["n_tokens"], meta["device"], meta["seconds"])
    return 0
