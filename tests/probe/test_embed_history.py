"""``probe.history: whole``: every earlier context window embedded once and mean-pooled with the
recent one. Checked against windows found independently (a token-by-token walk of the cut's
definition) and a separate forward pass per window; no window reads a token at or after the
prediction time; ``recent`` is what it always was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ehrscale.cli import main
from ehrscale.model.gpt import load_model
from ehrscale.probe.embed import embed_cell, embed_windows, plan_history, plan_windows
from ehrscale.probe.examples import load_embeddings
from ehrscale.probe.settings import ProbeSettings
from ehrscale.tokens.store import TokenSplit, earlier_cuts, event_start_tables, history_chains, probe_span
from ehrscale.tokens.toy import write_synthetic_tokens
from ehrscale.tokens.vocab import STATIC_PREFIX_LEN
from support.meds import write_labels

torch.set_num_threads(1)
CTX = 32
BUDGET = CTX - STATIC_PREFIX_LEN
SIGNAL = set(range(20, 36))
SPLITS = ("train", "tuning", "held_out")



@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A toy store whose vocabulary has interval and quantile tokens (so event boundaries matter),
    real times (body token k at k seconds), up to three prediction times per patient (many far
    beyond one context), one trained cell, and its embeddings with both histories."""
    root = tmp_path_factory.mktemp("history")
    tok = write_synthetic_tokens(root / "tok", vocab_size=48, n_subjects={"train": 240, "tuning": 100, "held_out": 120},
                                 mean_length=60, seed=7)
    vocab = json.loads((tok / "vocab.json").read_text())["tokens"]
    for i in range(10, 14):
        vocab[i] = f"[INTERVAL//{i}]"  # the token after an interval never starts an event
    for i in range(14, 19):
        vocab[i] = f"Q{i - 13}"  # a quantile never starts an event
    (tok / "vocab.json").write_text(json.dumps({"tokens": vocab}))
    rng = np.random.default_rng(0)
    rows = []
    for split in SPLITS:
        d = tok / split
        offsets, tokens = np.load(d / "offsets.npy"), np.load(d / "tokens.npy")
        times = np.zeros(len(tokens), np.int64)
        for i, sid in enumerate(np.load(d / "subject_ids.npy")):
            a, b = int(offsets[i]), int(offsets[i + 1])
            n = b - a - STATIC_PREFIX_LEN
            times[a + STATIC_PREFIX_LEN : b] = 1_000_000 * np.r_[np.arange(1, n), n - 1]
            if n - 1 < 4:
                continue
            for k in sorted(set(rng.integers(2, n - 1, 3).tolist())):
                t = int(times[a + STATIC_PREFIX_LEN + k])  # predict at body token k: tokens < k are visible
                rows.append((int(sid), t, int(tokens[a + STATIC_PREFIX_LEN + k - 1]) in SIGNAL))
        np.save(d / "times.npy", times)
    sids, ts, ys = map(np.array, zip(*rows))
    labels = {"planted": write_labels(root / "labels" / "planted.parquet", sids, ts, ys)}
    sizes = {"t16": {"n_layer": 2, "d_model": 16, "n_head": 2}}
    grid = {"budgets": [2e9], "min_tokens_per_param": 0, "max_tokens_per_param": 1e6, "max_epochs": 100}
    args = ["train", "--tokens", str(tok), "--out", str(root / "run"), "--cell", "C2e9_t16", "--sizes", json.dumps(sizes),
            "--grid", json.dumps(grid), "--model", json.dumps({"context_length": CTX}),
            "--settings", json.dumps({"threads": 1, "min_steps": 60, "val_windows": 16, "val_batch_size": 8})]
    assert main(args) == 0
    model = root / "run" / "model.pt"
    out = {"root": root, "tok": tok, "labels": labels, "model": model, "vocab": vocab}
    for name, settings in (("default", ProbeSettings(batch_tokens=512)),
                           ("recent", ProbeSettings(batch_tokens=512, history="recent")),
                           ("whole", ProbeSettings(batch_tokens=512, history="whole"))):
        out[f"meta_{name}"] = embed_cell(model, tok, labels, root / f"{name}.npz", settings)
        out[name] = root / f"{name}.npz"
    return out


def walk_windows(split: TokenSplit, vocab: list[str], i: int, t: int) -> list[tuple[int, int, int]]:
    """(start, lo, hi) of every window of (patient i, time t), recent first, found token by token
    from the definitions (not through the store's cut functions)."""
    continues, interval = event_start_tables(vocab)
    tok, tim = np.asarray(split.tokens), np.asarray(split.times)
    a, b = int(split.offsets[i]), int(split.offsets[i + 1])
    body_start = a + STATIC_PREFIX_LEN
    end = body_start
    while end < b - 1 and tim[end] < t:
        end += 1

    def snap(hi: int) -> int:  # the first event start at or after hi - BUDGET, never before the body start
        lo = max(body_start, hi - BUDGET)
        if lo > body_start:
            while lo < hi and (continues[tok[lo]] or interval[tok[lo - 1]]):
                lo += 1
        return lo

    out = [(a, snap(end), end)]
    hi = out[0][1]
    while hi > body_start:
        lo = snap(hi)
        if lo == hi:  # no event starts within a context before hi: nothing earlier is reachable
            break
        out.append((a, lo, hi))
        hi = lo
    return out


def all_examples(cohort):
    """(split, TokenSplit, patient index, prediction time, row in x) of every planted example."""
    _, tasks, _ = load_embeddings(cohort["whole"])
    df = tasks["planted"]
    for split in SPLITS:
        st = TokenSplit(cohort["tok"] / split)
        part = df[df["split"] == split]
        for sid, t, row in zip(part["subject_id"], part["prediction_time"], part["row"]):
            yield split, st, int(st.index_of([sid])[0]), int(t), int(row)


def last_state(model, st: TokenSplit, a: int, lo: int, hi: int) -> np.ndarray:
    ids = np.r_[np.asarray(st.tokens[a : a + STATIC_PREFIX_LEN]), np.asarray(st.tokens[lo:hi])].astype(np.int64)
    with torch.no_grad():
        return model.hidden_states(torch.from_numpy(ids)[None])[0, -1].numpy().astype(np.float64)


# --------------------------------------------------------------------------- the store's earlier cut


def test_earlier_cuts_equal_a_direct_scan(tmp_path):
    """earlier_cuts (vectorised) is the first event start at or after cut - budget, never before
    the body start; the cut itself at the body start or when no event starts in the budget
    (runs of non-starting tokens longer than a context and than one scan chunk)."""
    vocab = ["[PAD]", "[UNK]", "[TIMELINE_END]", "GENDER//F", "RACE//WHITE", "MARITAL//SINGLE", "AGE//50-54",
             "[INTERVAL//1h-2h]", "LAB//1", "Q3", "ICD10CM//I50", "ICD10CM_DETAIL//9", "ICD10PCS_SECTION//0",
             "ICD10PCS//DTJ", "MEDICATION//X"]
    continues, interval = event_start_tables(vocab)
    rng = np.random.default_rng(11)
    tokens, offsets = [], [0]
    for i in range(30):
        body = rng.choice(np.arange(7, len(vocab)), int(rng.integers(1, 200)))
        if i % 3 == 0:
            body[len(body) // 3 : len(body) // 3 + 50] = vocab.index("Q3")
        tokens += [3, 4, 5, 6, *body.tolist(), 2]
        offsets.append(len(tokens))
    d = tmp_path / "tok" / "train"
    d.mkdir(parents=True)
    np.save(d / "tokens.npy", np.array(tokens, np.uint16))
    np.save(d / "offsets.npy", np.array(offsets, np.int64))
    np.save(d / "times.npy", np.zeros(len(tokens), np.int64))
    np.save(d / "subject_ids.npy", np.arange(30, dtype=np.int64))
    (tmp_path / "tok" / "vocab.json").write_text(json.dumps({"tokens": vocab}))
    split = TokenSplit(d)
    tok = np.array(tokens)
    idx = rng.integers(0, 30, 2000)
    body_start = np.array(offsets)[idx] + STATIC_PREFIX_LEN
    cut = body_start + (rng.random(2000) * (np.array(offsets)[idx + 1] - 1 - body_start + 1)).astype(np.int64)
    stuck = 0
    for ctx in (STATIC_PREFIX_LEN + 1, 12, 40, 256):
        got = earlier_cuts(split, idx, cut, ctx)
        for k in range(len(idx)):
            lo = max(int(body_start[k]), int(cut[k]) - (ctx - STATIC_PREFIX_LEN))
            if lo > body_start[k]:
                while lo < cut[k] and (continues[tok[lo]] or interval[tok[lo - 1]]):
                    lo += 1
            assert got[k] == lo, (ctx, k)
            stuck += bool(got[k] == cut[k] and cut[k] > body_start[k])
    assert stuck > 0  # the no-progress case was exercised
    # chains: consecutive, ending at the body start unless stuck, never past the starting cut
    ex, start, lo, hi = history_chains(split, idx, cut, 40)
    for k in np.unique(ex)[:200].tolist():
        sel = ex == k
        assert hi[sel][0] == cut[k] and (lo[sel][:-1] == hi[sel][1:]).all() and (lo[sel] < hi[sel]).all()
        assert (start[sel] == offsets[idx[k]]).all() and (hi[sel] <= cut[k]).all()
    with pytest.raises(Exception, match="outside"):
        earlier_cuts(split, [0], [offsets[1]], 40)


# --------------------------------------------------------------------------- embeddings


def test_history_that_fits_one_window_gets_exactly_the_recent_embedding(cohort):
    xr, tr, _ = load_embeddings(cohort["recent"])
    xw, tw, meta = load_embeddings(cohort["whole"])
    assert meta["history"] == "whole" and meta["n_history_windows"] > 0
    one, many = 0, 0
    for _, st, i, t, row in all_examples(cohort):
        a, cut, _ = probe_span(st, i, t, CTX)
        if cut == a + STATIC_PREFIX_LEN:
            np.testing.assert_array_equal(xw[row], xr[row])
            one += 1
        else:
            many += not np.array_equal(xw[row], xr[row])
    assert one > 50 and many > 50
    for t in tr:  # same examples, same rows
        for col in ("row", "subject_id", "prediction_time", "label", "split"):
            np.testing.assert_array_equal(tr[t][col].to_numpy(), tw[t][col].to_numpy())


def test_whole_history_equals_the_mean_of_each_window_run_alone(cohort):
    """Each embedding is the mean of the last hidden states of its windows, each run through the
    model on its own; windows found independently, token by token."""
    model, _ = load_model(cohort["model"])
    xw, _, meta = load_embeddings(cohort["whole"])
    checked, deep = 0, 0
    distinct, pairs = set(), 0
    for split, st, i, t, row in all_examples(cohort):
        windows = walk_windows(st, cohort["vocab"], i, t)
        distinct |= {(split, *w) for w in windows[1:]}
        pairs += len(windows) - 1
        if len(windows) < 2 or checked >= 150:
            continue
        want = np.mean([last_state(model, st, *w) for w in windows], axis=0)
        np.testing.assert_allclose(xw[row], want, atol=1e-4)
        checked += 1
        deep += len(windows) >= 4
    assert checked == 150 and deep > 10
    # each distinct earlier window embedded once, and windows are shared (examples of a window, chains that meet)
    assert meta["n_history_windows"] == len(distinct) < pairs
    assert meta["n_history_tokens"] == sum(STATIC_PREFIX_LEN + hi - lo for _, _, lo, hi in distinct)


def test_no_window_reads_at_or_after_the_prediction_time(cohort):
    """Every token of every window an example's embedding pools (recent: up to its read
    position; earlier: all of it, prefix included) is strictly earlier than the prediction time,
    and every earlier window ends at or before its recent cut."""
    _, tasks, _ = load_embeddings(cohort["whole"])
    df = tasks["planted"]
    n_earlier = 0
    for split in SPLITS:
        st = TokenSplit(cohort["tok"] / split)
        times = np.asarray(st.times)
        ex = df[df["split"] == split]
        ex = ex.assign(index=st.index_of(ex["subject_id"].to_numpy()))
        planned, windows = plan_windows(st, ex, CTX)
        earlier, owner, row = plan_history(st, planned, windows, CTX)
        first_time = planned.groupby("uid")["prediction_time"].min()
        for w, (a, c, e, uids, pos) in enumerate(windows):
            t = int(first_time.loc[uids].min())
            for u, p in zip(uids.tolist(), pos.tolist()):
                seen = np.r_[times[a : a + STATIC_PREFIX_LEN], times[c:e]][: p + 1]
                assert (seen < first_time.loc[u]).all()
            for r in row[owner == w].tolist():
                ea, lo, hi, _, epos = earlier[r]
                assert ea == a and hi <= c and epos[0] == STATIC_PREFIX_LEN + hi - lo - 1
                assert (np.r_[times[ea : ea + STATIC_PREFIX_LEN], times[lo:hi]] < t).all()
                n_earlier += 1
    assert n_earlier > 100


def test_whole_history_is_stable_across_batch_sizes(cohort, tmp_path):
    embed_cell(cohort["model"], cohort["tok"], cohort["labels"], tmp_path / "b.npz",
               ProbeSettings(batch_tokens=100, history="whole"))
    np.testing.assert_allclose(load_embeddings(tmp_path / "b.npz")[0], load_embeddings(cohort["whole"])[0], atol=1e-5)


def test_recent_is_unchanged(cohort):
    """The default is ``recent``, and ``recent`` is today's output: the embeddings of the recent
    windows alone (plan_windows + embed_windows, bit for bit), the same rows, and the meta it had."""
    xd, td, md = load_embeddings(cohort["default"])
    xr, tr, mr = load_embeddings(cohort["recent"])
    assert ProbeSettings().history == "recent"
    np.testing.assert_array_equal(xd, xr)
    for col in ("row", "subject_id", "prediction_time", "label", "split"):
        np.testing.assert_array_equal(td["planted"][col].to_numpy(), tr["planted"][col].to_numpy())
    assert set(md) == set(mr) == {"cell", "tasks", "n_examples", "n_embedded", "n_windows", "n_tokens",
                                  "n_padded_tokens", "seconds", "device", "dtype", "d_model", "context_length"}
    model, _ = load_model(cohort["model"])
    df = td["planted"]
    parts, offset = [], 0
    for split in SPLITS:
        st = TokenSplit(cohort["tok"] / split)
        ex = df[df["split"] == split]
        ex = ex.assign(index=st.index_of(ex["subject_id"].to_numpy()))
        planned, windows = plan_windows(st, ex, CTX)
        x, _ = embed_windows(model, st, windows, int(planned["uid"].max()) + 1, torch.device("cpu"), 512)
        parts.append(x)
        np.testing.assert_array_equal(ex["row"].to_numpy(), planned["uid"].to_numpy() + offset)
        offset += len(x)
    np.testing.assert_array_equal(xd, np.concatenate(parts))
