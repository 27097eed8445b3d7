"""The probe stage: the event-boundary cut, embeddings (exact, no lookahead, deterministic),
the linear probe and its intervals, the baseline, skips, and the utility laws."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from ehrscale.cli import main
from ehrscale.fit.utility import fit_two_stage, fit_utility_frontier, saturating
from ehrscale.model.gpt import load_model
from ehrscale.probe.baseline import baseline_task
from ehrscale.probe.embed import embed_cell, plan_windows
from ehrscale.probe.examples import load_embeddings
from ehrscale.probe.linear import fit_probe, probe_embeddings
from ehrscale.probe.settings import ProbeSettings
from ehrscale.tokens.store import TokenSplit, probe_input, probe_span
from ehrscale.tokens.toy import write_synthetic_tokens
from ehrscale.tokens.vocab import STATIC_PREFIX_LEN
from support.meds import write_labels

torch.set_num_threads(1)
CTX = 32
SIGNAL = set(range(10, 29))  # the planted task: is the last token before the prediction time in this set?
FAST = {"bootstrap": 200}



@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A token store with real times (token k of a body at k seconds), two prediction times per
    patient, a planted task and a rare one, and one trained cell."""
    root = tmp_path_factory.mktemp("probe")
    tok = write_synthetic_tokens(root / "tok", vocab_size=48, n_subjects={"train": 300, "tuning": 120, "held_out": 160},
                                 mean_length=50, seed=3)
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "tuning", "held_out"):
        d = tok / split
        offsets, tokens = np.load(d / "offsets.npy"), np.load(d / "tokens.npy")
        times = np.zeros(len(tokens), np.int64)
        for i, sid in enumerate(np.load(d / "subject_ids.npy")):
            a, b = int(offsets[i]), int(offsets[i + 1])
            times[a + STATIC_PREFIX_LEN : b] = 1_000_000 * np.r_[np.arange(1, b - a - STATIC_PREFIX_LEN), b - a - STATIC_PREFIX_LEN - 1]
            n_body = b - a - STATIC_PREFIX_LEN - 1
            if n_body < 4:
                continue
            for k in sorted(set(rng.integers(2, n_body, 2).tolist())):
                t = int(times[a + STATIC_PREFIX_LEN + k])  # predict at token k: tokens < k are visible
                rows.append((int(sid), t, int(tokens[a + STATIC_PREFIX_LEN + k - 1]) in SIGNAL))
        np.save(d / "times.npy", times)
    sids, ts, ys = map(np.array, zip(*rows))
    labels = {"planted": write_labels(root / "labels" / "planted.parquet", sids, ts, ys)}
    rare = np.zeros(len(ys), bool)
    rare[:3] = True
    labels["rare"] = write_labels(root / "labels" / "rare.parquet", sids, ts, rare)
    sizes = {"t16": {"n_layer": 2, "d_model": 16, "n_head": 2}}
    grid = {"budgets": [2e9], "min_tokens_per_param": 0, "max_tokens_per_param": 1e6, "max_epochs": 100}
    args = ["train", "--tokens", str(tok), "--out", str(root / "run"), "--cell", "C2e9_t16", "--sizes", json.dumps(sizes),
            "--grid", json.dumps(grid), "--model", json.dumps({"context_length": CTX}),
            "--settings", json.dumps({"threads": 1, "min_steps": 100, "val_windows": 16, "val_batch_size": 8})]
    assert main(args) == 0
    meta = embed_cell(root / "run" / "model.pt", tok, labels, root / "emb.npz", ProbeSettings(batch_tokens=512))
    return {"root": root, "tok": tok, "labels": labels, "model": root / "run" / "model.pt", "emb": root / "emb.npz",
            "meta": meta}


# --------------------------------------------------------------------------- the cut


def test_cut_starts_at_an_event_boundary(tmp_path):
    """Left truncation never starts the body with a value token, a code detail without its
    category, a PCS body-system token without its section, or a code without its interval."""
    vocab = ["[PAD]", "[UNK]", "[TIMELINE_END]", "GENDER//F", "RACE//WHITE", "MARITAL//SINGLE", "AGE//50-54",
             "[INTERVAL//1h-2h]", "LAB//1", "Q3", "ICD10CM//I50", "ICD10CM_DETAIL//9", "ICD10PCS_SECTION//0",
             "ICD10PCS//DTJ", "ICD10PCS_DETAIL//4ZZ", "[INTERVAL//6mt]", "MEDICATION//X"]
    ix = {t: i for i, t in enumerate(vocab)}
    body = ["[INTERVAL//1h-2h]", "LAB//1", "Q3", "ICD10CM//I50", "ICD10CM_DETAIL//9", "[INTERVAL//6mt]",
            "[INTERVAL//1h-2h]", "ICD10PCS_SECTION//0", "ICD10PCS//DTJ", "ICD10PCS_DETAIL//4ZZ", "MEDICATION//X",
            "[INTERVAL//1h-2h]", "LAB//1", "Q3"]
    seq = ["GENDER//F", "RACE//WHITE", "MARITAL//SINGLE", "AGE//50-54", *body, "[TIMELINE_END]"]
    d = tmp_path / "tok" / "train"
    d.mkdir(parents=True)
    np.save(d / "tokens.npy", np.array([ix[t] for t in seq], np.uint16))
    np.save(d / "offsets.npy", np.array([0, len(seq)], np.int64))
    np.save(d / "times.npy", np.r_[np.zeros(4), np.arange(1, len(body) + 1), len(body)].astype(np.int64))
    np.save(d / "subject_ids.npy", np.array([7], np.int64))
    (tmp_path / "tok" / "vocab.json").write_text(json.dumps({"tokens": vocab}))
    split = TokenSplit(d)
    starts = {0, 3, 5, 10, 11}  # body indices that begin an event (its interval tokens first)
    naive_bad = 0
    for ctx in range(STATIC_PREFIX_LEN + 1, STATIC_PREFIX_LEN + len(body) + 2):
        x = probe_input(split, 0, 10**6, ctx)
        kept = len(x) - STATIC_PREFIX_LEN
        first = len(body) - kept
        budget = ctx - STATIC_PREFIX_LEN
        assert kept <= budget
        assert kept == 0 or first in starts, (ctx, vocab[x[STATIC_PREFIX_LEN]])
        # maximal: the nearest event start that fits
        assert first == min([s for s in starts if len(body) - s <= budget], default=len(body))
        naive_bad += max(0, len(body) - budget) not in starts
    assert naive_bad >= 5  # the plain left cut would have started mid-event for these contexts


def test_vectorised_spans_equal_a_direct_scan(tmp_path):
    """probe_spans (all examples at once) equals the cut's definition, scanned token by token:
    end = first body token at or after the time, cut = first event start at or after the left
    budget edge; including runs of non-starting tokens longer than one scan chunk."""
    from ehrscale.tokens.store import event_start_tables, probe_spans

    vocab = ["[PAD]", "[UNK]", "[TIMELINE_END]", "GENDER//F", "RACE//WHITE", "MARITAL//SINGLE", "AGE//50-54",
             "[INTERVAL//1h-2h]", "LAB//1", "Q3", "ICD10CM//I50", "ICD10CM_DETAIL//9", "ICD10PCS_SECTION//0",
             "ICD10PCS//DTJ", "MEDICATION//X"]
    continues, interval = event_start_tables(vocab)
    rng = np.random.default_rng(4)
    tokens, times, offsets = [], [], [0]
    for i in range(40):
        body = rng.choice(np.arange(7, len(vocab)), int(rng.integers(1, 150)))
        if i % 4 == 0:
            body[len(body) // 3 : len(body) // 3 + 45] = vocab.index("Q3")  # no event start for 45 tokens
        t = np.cumsum(rng.integers(0, 3, len(body)))  # ties: several tokens share a time
        tokens += [3, 4, 5, 6, *body.tolist(), 2]
        times += [0] * STATIC_PREFIX_LEN + t.tolist() + [int(t[-1])]
        offsets.append(len(tokens))
    d = tmp_path / "tok" / "train"
    d.mkdir(parents=True)
    np.save(d / "tokens.npy", np.array(tokens, np.uint16))
    np.save(d / "offsets.npy", np.array(offsets, np.int64))
    np.save(d / "times.npy", np.array(times, np.int64))
    np.save(d / "subject_ids.npy", np.arange(40, dtype=np.int64))
    (tmp_path / "tok" / "vocab.json").write_text(json.dumps({"tokens": vocab}))
    split = TokenSplit(d)
    idx = rng.integers(0, 40, 3000)
    when = rng.integers(-2, 320, 3000)
    tok, tim = np.array(tokens), np.array(times)
    for ctx in (STATIC_PREFIX_LEN + 1, 12, 40, 256):
        start, cut, end = probe_spans(split, idx, when, ctx)
        for k, (i, t) in enumerate(zip(idx.tolist(), when.tolist())):
            a, b = offsets[i], offsets[i + 1]
            body_start = a + STATIC_PREFIX_LEN
            e = body_start
            while e < b - 1 and tim[e] < t:
                e += 1
            lo = max(body_start, e - (ctx - STATIC_PREFIX_LEN))
            c = lo
            if lo > body_start:
                while c < e and (continues[tok[c]] or interval[tok[c - 1]]):
                    c += 1
            assert (start[k], cut[k], end[k]) == (a, c, e), (ctx, i, t)
            assert (tim[cut[k] : end[k]] < t).all()


# --------------------------------------------------------------------------- embeddings


def test_model_rebuilds_from_its_file_and_exposes_hidden_states(cohort):
    model, ck = load_model(cohort["model"])
    assert ck["cell"]["id"] == "C2e9_t16" and "state_dict" not in ck
    idx = torch.tensor([[3, 5, 7, 11, 13]])
    h = model.hidden_states(idx)
    logits, _ = model(idx)
    assert h.shape == (1, 5, 16)
    assert torch.allclose(logits, h @ model.embed.weight.T, atol=1e-5)
    assert torch.allclose(h.pow(2).mean(-1) / model.norm.weight.pow(2).mean(), torch.ones(1, 5), atol=0.5)
    # the last block run only where read gives the same hidden states there
    batch = torch.tensor([[3, 5, 7, 11, 13], [13, 11, 7, 5, 3]])
    rows, cols = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 4, 1, 2, 4])
    with torch.no_grad():
        np.testing.assert_allclose(model.hidden_states_at(batch, rows, cols), model.hidden_states(batch)[rows, cols], atol=1e-5)


def test_embeddings_equal_standalone_inputs_and_never_see_the_prediction_time(cohort):
    """One pass per window serves several prediction times, exactly: each embedding equals the
    last hidden state of the example's own probe input, whose tokens are all strictly earlier."""
    x, tasks, meta = load_embeddings(cohort["emb"])
    model, _ = load_model(cohort["model"])
    assert meta["n_windows"] < meta["n_embedded"]  # windows were shared
    df = tasks["planted"]
    checked = 0
    for split in ("train", "held_out"):
        st = TokenSplit(cohort["tok"] / split)
        part = df[df["split"] == split].iloc[::7]
        for sid, t, row in zip(part["subject_id"], part["prediction_time"], part["row"]):
            i = int(st.index_of([sid])[0])
            a, cut, end = probe_span(st, i, int(t), CTX)
            assert (np.asarray(st.times[cut:end]) < t).all() and (np.asarray(st.times[a : a + STATIC_PREFIX_LEN]) < t).all()
            ids = probe_input(st, i, int(t), CTX)
            with torch.no_grad():
                h = model.hidden_states(torch.from_numpy(ids)[None])[0, -1].numpy()
            np.testing.assert_allclose(x[row], h, atol=1e-4)
            checked += 1
    assert checked > 40
    # the windows actually run: every position read for an example covers only tokens before its time
    st = TokenSplit(cohort["tok"] / "held_out")
    ex = df[df["split"] == "held_out"]
    ex = ex.assign(index=st.index_of(ex["subject_id"].to_numpy()))
    planned, windows = plan_windows(st, ex, CTX)
    time_of_uid = planned.groupby("uid")["prediction_time"].min()
    for a, c, e, uids, pos in windows:
        assert STATIC_PREFIX_LEN + e - c <= CTX
        for u, p in zip(uids.tolist(), pos.tolist()):
            seen = np.r_[np.asarray(st.times[a : a + STATIC_PREFIX_LEN]), np.asarray(st.times[c:e])][: p + 1]
            assert (seen < time_of_uid[u]).all()


def test_same_seed_same_auroc_on_cpu(cohort, tmp_path):
    s = ProbeSettings(**FAST)
    embed_cell(cohort["model"], cohort["tok"], cohort["labels"], tmp_path / "again.npz", ProbeSettings(batch_tokens=512))
    np.testing.assert_array_equal(load_embeddings(tmp_path / "again.npz")[0], load_embeddings(cohort["emb"])[0])
    # the batch size is a speed setting: other batches agree to float rounding
    embed_cell(cohort["model"], cohort["tok"], cohort["labels"], tmp_path / "other.npz", ProbeSettings(batch_tokens=200))
    np.testing.assert_allclose(load_embeddings(tmp_path / "other.npz")[0], load_embeddings(cohort["emb"])[0], atol=1e-5)
    a = probe_embeddings(cohort["emb"], tmp_path / "a", s)["tasks"]["planted"]
    b = probe_embeddings(tmp_path / "again.npz", tmp_path / "b", s)["tasks"]["planted"]
    assert a["held_out"] == b["held_out"] and a["C"] == b["C"]


# --------------------------------------------------------------------------- the probe


def test_planted_signal_beats_chance_and_predictions_follow_meds(cohort, tmp_path):
    rec = probe_embeddings(cohort["emb"], tmp_path, ProbeSettings(**FAST))["tasks"]["planted"]
    assert rec["status"] == "ok" and len(rec["tuning_grid"]) == 7
    auroc = rec["held_out"]["auroc"]
    assert auroc["lo"] > 0.6, auroc
    assert set(rec["held_out"]) == {"auroc", "auprc", "brier", "n", "prevalence", "bootstrap"}
    assert rec["held_out"]["bootstrap"]["clusters"] < rec["held_out"]["n"]["estimate"]  # patients, not examples
    for m in ("auroc", "auprc", "brier", "prevalence"):
        r = rec["held_out"][m]
        assert 0 <= r["lo"] <= r["estimate"] <= r["hi"] <= 1, (m, r)
    pred = pq.read_table(tmp_path / "planted.predictions.parquet")
    assert pred.column_names == ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_probability",
                                 "predicted_boolean_value"]
    assert pred.num_rows == rec["held_out"]["n"]["estimate"] == rec["counts"]["held_out"]["n"]
    # the decision threshold is chosen on tuning and stated beside the predictions
    meta = json.loads(pred.schema.metadata[b"ehrscale"])
    assert meta["threshold"] == rec["threshold"]["value"] and "tuning" in meta["threshold_rule"]
    p = pred.column("predicted_boolean_probability").to_numpy()
    assert (pred.column("predicted_boolean_value").to_numpy() == (p >= meta["threshold"])).all()


def test_the_threshold_is_youdens_j_on_tuning_never_held_out(cohort):
    """Only the tuning labels move the threshold: held-out labels shuffled or not, it stays."""
    from ehrscale.probe.linear import tuning_threshold

    x, tasks, _ = load_embeddings(cohort["emb"])
    df = tasks["planted"]
    X = {s: x[df.loc[df["split"] == s, "row"]] for s in ("train", "tuning", "held_out")}
    y = {s: df.loc[df["split"] == s, "label"].to_numpy() for s in X}
    fit = fit_probe(X, y, ProbeSettings(**FAST))
    shuffled = fit_probe(X, y | {"held_out": np.random.default_rng(2).permutation(y["held_out"])}, ProbeSettings(**FAST))
    assert fit.threshold == shuffled.threshold
    yt = np.array([0, 0, 0, 1, 1, 1], bool)
    assert tuning_threshold(yt, np.array([0.1, 0.2, 0.4, 0.5, 0.8, 0.9])) == 0.5  # J = 1 there
    assert tuning_threshold(yt, np.array([0.1, 0.2, 0.85, 0.5, 0.8, 0.9])) == 0.5  # J: 1/3 at 0.9 and 0.8, 2/3 at 0.5


def test_shuffled_labels_give_an_interval_around_chance(cohort):
    x, tasks, _ = load_embeddings(cohort["emb"])
    df = tasks["planted"]
    rng = np.random.default_rng(1)
    X = {s: x[df.loc[df["split"] == s, "row"]] for s in ("train", "tuning", "held_out")}
    y = {s: rng.permutation(df.loc[df["split"] == s, "label"].to_numpy()) for s in X}
    a = fit_probe(X, y, ProbeSettings(**FAST)).record["held_out"]["auroc"]
    assert a["lo"] < 0.5 < a["hi"], a


def test_clustered_bootstrap_metrics_equal_sklearn_on_each_resample():
    """Each resample draws whole patients; its count-based AUROC, AUPRC and Brier equal sklearn's on
    the resampled examples themselves (each repeated as often as its patient was drawn), row by row,
    with tied scores (rounded) and without."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from ehrscale.probe.metrics import ScoreCounts, cluster_weights

    rng = np.random.default_rng(5)
    groups = rng.integers(0, 120, 300)  # 120 patients, 2.5 examples each on average
    y = rng.random(300) < 0.2
    for p in (rng.beta(2, 5, 300) + 0.2 * y, np.round(rng.beta(2, 5, 300) + 0.2 * y, 1)):
        w = next(cluster_weights(groups, 25, seed=1))
        m = ScoreCounts(y, p).metrics(w)
        for r in range(25):
            idx = np.repeat(np.arange(300), w[r])
            np.testing.assert_allclose(m["auroc"][r], roc_auc_score(y[idx], p[idx]), rtol=1e-12)
            np.testing.assert_allclose(m["auprc"][r], average_precision_score(y[idx], p[idx]), rtol=1e-12)
            np.testing.assert_allclose(m["brier"][r], np.mean((p[idx] - y[idx]) ** 2), rtol=1e-12)
            patients = np.unique(groups[idx])  # a drawn patient brings all its examples, none comes alone
            assert set(np.flatnonzero(np.isin(groups, patients))) == set(idx)
        assert np.ptp(m["auroc"]) > 0.01  # the rows really are different resamples


def test_clustered_intervals_widen_when_patients_repeat_examples():
    """Copies of a patient's example add no information: an interval that resamples examples shrinks
    with them, one that resamples patients does not."""
    from ehrscale.probe.metrics import binary_metrics

    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    p = rng.beta(2, 5, 400) + 0.15 * y
    copies = 4
    yy, pp, groups = np.repeat(y, copies), np.repeat(p, copies), np.repeat(np.arange(400), copies)
    width = lambda m: m["auroc"]["hi"] - m["auroc"]["lo"]  # noqa: E731
    alone = width(binary_metrics(y, p, n_boot=400))
    clustered = width(binary_metrics(yy, pp, groups, n_boot=400))
    naive = width(binary_metrics(yy, pp, None, n_boot=400))
    assert naive < 0.7 * alone  # example-level resampling pretends 4x the data
    assert 0.8 * alone < clustered < 1.25 * alone


def test_too_few_positives_is_a_recorded_skip(cohort, tmp_path):
    rec = probe_embeddings(cohort["emb"], tmp_path, ProbeSettings(**FAST))["tasks"]["rare"]
    assert rec["status"] == "skipped" and "too few examples in" in rec["reason"] and "positive" in rec["reason"]
    assert "held_out" not in rec
    assert pq.read_table(tmp_path / "rare.predictions.parquet").num_rows == 0
    # and through the CLI, without a crash
    assert main(["probe", "--embeddings", str(cohort["emb"]), "--out", str(tmp_path / "cli"),
                 "--settings", json.dumps(FAST)]) == 0
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["tasks"]["rare"]["status"] == "skipped"


def test_bad_probe_settings_are_named(cohort, capsys):
    assert main(["probe", "--embeddings", str(cohort["emb"]), "--out", "x", "--settings", '{"c_values": [1, 2]}']) == 2
    assert "probe.c_values" in capsys.readouterr().err


def test_baselines_are_labelled_by_what_they_see(cohort, tmp_path):
    """Three count baselines: the whole history on every train example, on the probe's own examples, and
    only the tokens in the model's window; each scores the same held-out examples."""
    from ehrscale.probe.baseline import count_features
    from ehrscale.probe.examples import read_counts

    settings = ProbeSettings(**FAST, max_train_examples=100, max_tuning_examples=60)
    rec = baseline_task(cohort["tok"], cohort["labels"]["planted"], tmp_path / "planted.json", tmp_path, settings, CTX)
    v = rec["variants"]
    assert set(v) == {"full_history", "same_examples", "same_window"}
    assert all(r["status"] == "ok" for r in v.values()) and v["full_history"]["held_out"]["auroc"]["estimate"] > 0.55
    n_labels = pq.read_table(cohort["labels"]["planted"]).num_rows
    assert sum(c["n"] for c in v["full_history"]["counts"].values()) == n_labels  # uncapped: every example
    assert abs(v["same_examples"]["counts"]["train"]["n"] - 100) <= 1 and abs(v["same_examples"]["counts"]["tuning"]["n"] - 60) <= 1
    assert v["same_examples"]["counts"] == v["same_window"]["counts"]
    assert len({json.dumps(r["counts"]["held_out"]) for r in v.values()}) == 1  # one held-out set
    for name in ("", ".same_examples", ".same_window"):
        assert pq.read_table(tmp_path / f"planted{name}.predictions.parquet").num_rows == v["full_history"]["counts"]["held_out"]["n"]
    # the window's counts are the whole history's, cut to the model's input
    keys, counts = read_counts(tmp_path / "planted.counts.npz")
    held = keys.iloc[-v["same_examples"]["counts"]["held_out"]["n"]:]
    split = TokenSplit(cohort["tok"] / "held_out")
    whole = count_features(split, held["subject_id"], held["prediction_time"], counts.shape[1])
    window = count_features(split, held["subject_id"], held["prediction_time"], counts.shape[1], CTX)
    np.testing.assert_array_equal(whole.toarray(), counts[-len(held):].toarray())
    assert (np.expm1(window.toarray()).round() <= np.expm1(whole.toarray()).round()).all()
    assert (np.expm1(window.toarray()).sum(1).round() <= CTX).all()  # at most the model's context
    assert (np.expm1(whole.toarray()).sum(1) > np.expm1(window.toarray()).sum(1) + 0.5).any()  # some histories are longer
    for i, (sid, t) in enumerate(zip(held["subject_id"].tolist()[:20], held["prediction_time"].tolist()[:20])):
        ids = probe_input(split, int(split.index_of([sid])[0]), t, CTX)  # the model's own input
        want = np.bincount(ids, minlength=counts.shape[1])
        np.testing.assert_allclose(np.expm1(window[i].toarray()[0]), want, atol=1e-9)


def test_the_combined_probe_gives_a_paired_gain_over_counts(cohort, tmp_path):
    settings = ProbeSettings(**FAST)
    baseline_task(cohort["tok"], cohort["labels"]["planted"], tmp_path / "base" / "planted.json", tmp_path / "base", settings, CTX)
    rec = probe_embeddings(cohort["emb"], tmp_path / "probe", settings, tmp_path / "base")["tasks"]["planted"]
    comb = rec["combined"]
    assert comb["status"] == "ok" and comb["held_out"]["auroc"]["estimate"] > 0.55
    gain = comb["gain_over_counts"]
    assert gain["lo"] <= gain["estimate"] <= gain["hi"]
    alone = pq.read_table(tmp_path / "base" / "planted.same_examples.predictions.parquet")
    from sklearn.metrics import roc_auc_score

    counts_auroc = roc_auc_score(alone.column("boolean_value").to_numpy(), alone.column("predicted_boolean_probability").to_numpy())
    assert gain["estimate"] == pytest.approx(comb["held_out"]["auroc"]["estimate"] - counts_auroc)


# --------------------------------------------------------------------------- utility laws


def test_frontier_law_recovers_a_known_curve():
    budgets = np.geomspace(1e11, 1e14, 6)
    z = np.log(budgets) - np.log(budgets).mean()
    truth = (0.80, 0.06, 0.7)
    exact = fit_utility_frontier(budgets, saturating(z, *truth), np.full(6, 0.01))
    np.testing.assert_allclose(exact.record["params"], truth, atol=2e-3)
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(20):
        y = saturating(z, *truth) + 0.005 * rng.standard_normal(6)
        draws = y + 0.005 * rng.standard_normal((100, 6))  # resamples of the same noise
        fit = fit_utility_frontier(budgets, y, np.full(6, 0.005), draws).record
        covered += fit["A"]["ci_low"] <= truth[0] <= fit["A"]["ci_high"]
        assert fit["A"]["identified"] and fit["gamma"]["identified"]
    assert covered >= 15  # nominal 95 %: at least 15 of 20
    assert not fit_utility_frontier(budgets[:2], [0.7, 0.72], [0.01, 0.01]).record["fitted"]


def test_two_stage_law_recovers_a_known_line_and_covers():
    rng = np.random.default_rng(0)
    a, b = 2.0, -0.5
    covered = 0
    for _ in range(60):
        loss = rng.uniform(2.0, 3.0, 17)
        y = a + b * loss + 0.01 * rng.standard_normal(17)
        fit = fit_two_stage(loss, y, np.full(17, 0.01), seed=int(rng.integers(1 << 30)))
        assert abs(fit["params"][1] - b) < 0.05
        covered += fit["b"]["ci_low"] <= b <= fit["b"]["ci_high"]
    assert covered >= 50  # nominal 95 % of 60 = 57


def test_paired_auroc_difference_covers_and_is_narrower_than_unpaired():
    """Two forecasts that share most of their noise: the paired interval of their AUROC difference
    covers the true difference at about its rate, and is narrower than the two marginal intervals."""
    from sklearn.metrics import roc_auc_score

    from ehrscale.probe.metrics import binary_metrics, paired_auroc_difference

    rng = np.random.default_rng(0)
    n, covered, narrower, trials = 1500, 0, 0, 40
    big = rng.standard_normal(400_000)
    y_big = rng.random(400_000) < 1 / (1 + np.exp(-(big - 2)))
    noise_big = rng.standard_normal(400_000)
    truth = roc_auc_score(y_big, big + noise_big) - roc_auc_score(y_big, 0.8 * big + noise_big)
    for t in range(trials):
        z = rng.standard_normal(n)
        y = rng.random(n) < 1 / (1 + np.exp(-(z - 2)))
        noise = rng.standard_normal(n)
        p_a, p_b = 0.8 * z + noise, z + noise
        d = paired_auroc_difference(y, p_a, p_b, n_boot=300, seed=t)
        assert d["estimate"] == pytest.approx(roc_auc_score(y, p_b) - roc_auc_score(y, p_a))
        covered += d["lo"] <= truth <= d["hi"]
        ma, mb = binary_metrics(y, p_a, n_boot=300, seed=t), binary_metrics(y, p_b, n_boot=300, seed=t)
        narrower += (d["hi"] - d["lo"]) < min(ma["auroc"]["hi"] - ma["auroc"]["lo"], mb["auroc"]["hi"] - mb["auroc"]["lo"])
    assert covered >= 34  # nominal 95 % of 40 = 38
    assert narrower == trials


def test_caps_are_fixed_stratified_nested_subsets():
    from ehrscale.probe.examples import cap_split

    rng = np.random.default_rng(3)
    n = 4000
    df = pd.DataFrame({"subject_id": rng.integers(1, 10**6, n), "prediction_time": rng.integers(0, 10**15, n),
                       "label": rng.random(n) < 0.1, "split": rng.choice(["train", "tuning", "held_out"], n, p=[0.6, 0.3, 0.1])})
    for split in ("train", "tuning"):
        small, large = cap_split(df, split, 500), cap_split(df, split, 1000)
        for capped, k in ((small, 500), (large, 1000)):
            part = capped[capped["split"] == split]
            assert abs(len(part) - k) <= 1
            full_prev = df.loc[df["split"] == split, "label"].mean()
            assert abs(part["label"].mean() - full_prev) < 0.005  # stratified: prevalence kept
            pd.testing.assert_frame_equal(capped[capped["split"] != split], df[df["split"] != split])  # others whole
        assert set(small.index) <= set(large.index)  # a larger cap keeps what a smaller one kept
        pd.testing.assert_frame_equal(cap_split(df.sample(frac=1, random_state=1), split, 500).sort_index(), small)  # order-free
        assert cap_split(df, split, None) is df and cap_split(df, split, 10**6) is df
    # tasks with the same prediction times but other labels keep nearly the same examples (shared embeddings)
    other = df.assign(label=rng.random(n) < 0.3)
    a, b = cap_split(df, "train", 1000), cap_split(other, "train", 1000)
    a, b = set(a.index[a["split"] == "train"]), set(b.index[b["split"] == "train"])
    assert len(a & b) > 0.9 * 1000
