"""Tokenizer: vocabulary from train only, token stream layout, decode round trip, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ehrscale.cli import main as cli_main
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.settings import load_settings
from ehrscale.extract.splits import SPLITS
from ehrscale.tokens.encode import TokenizeSettings, decode, tokenize
from ehrscale.tokens.store import TokenSplit
from ehrscale.tokens.vocab import (
    INTERVAL_EDGES_US,
    INTERVAL_LONG,
    INTERVAL_TOKENS,
    SIX_MONTHS_US,
    STATIC_PREFIX_LEN,
    Vocab,
    age_token,
    expand_code,
    race_group,
)
from support.meds import ev, synthetic_events, write_meds


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    events, splits = synthetic_events(60, seed=1)
    meds = write_meds(root / "meds", events, splits, shards_per_split=2)
    tokenize(meds, root / "tok", TokenizeSettings(min_count=1))
    return meds, root / "tok", events, splits


@pytest.fixture(scope="module")
def demo(demo_pipeline):
    return demo_pipeline / "meds", demo_pipeline / "tok"


def _read_split(meds: Path, split: str) -> pd.DataFrame:
    files = sorted((meds / "data" / split).glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


# --------------------------------------------------------------------------- design units


def test_expand_code_keeps_hierarchy():
    assert expand_code("ICD10CM//I509") == ("ICD10CM//I50", "ICD10CM_DETAIL//9")
    assert expand_code("ICD10CM//I10") == ("ICD10CM//I10",)
    assert expand_code("ICD9CM//4280") == ("ICD9CM//428", "ICD9CM_DETAIL//0")
    assert expand_code("ICD9CM//E8497") == ("ICD9CM//E849", "ICD9CM_DETAIL//7")
    assert expand_code("ICD10PCS//0DTJ4ZZ") == ("ICD10PCS_SECTION//0", "ICD10PCS//DTJ", "ICD10PCS_DETAIL//4ZZ")
    assert expand_code("ICD9PCS//3893") == ("ICD9PCS//38", "ICD9PCS_DETAIL//93")
    assert expand_code("LAB//50912//mg/dL") == ("LAB//50912//mg/dL",)
    assert expand_code("RACE//WHITE") == () and expand_code("GENDER//F") == () and expand_code("MEDS_BIRTH") == ()


def test_race_and_age_bins():
    assert race_group("WHITE - RUSSIAN") == "WHITE"
    assert race_group("BLACK/CAPE VERDEAN") == "BLACK"
    assert race_group("HISPANIC/LATINO - PUERTO RICAN") == "HISPANIC"
    assert race_group("ASIAN - CHINESE") == "ASIAN"
    assert race_group("UNABLE TO OBTAIN") == "UNKNOWN"
    assert race_group("AMERICAN INDIAN/ALASKA NATIVE") == "OTHER"
    assert age_token(64.9) == "AGE//60-64" and age_token(101) == "AGE//95+" and age_token(None) == "AGE//UNKNOWN"


# --------------------------------------------------------------------------- layout


def test_layout_dtypes_and_stats(synth):
    _, tok, _, splits = synth
    vocab = json.loads((tok / "vocab.json").read_text())
    assert vocab["tokens"][0] == "[PAD]" and vocab["token_to_id"]["[PAD]"] == 0
    assert len(vocab["groups"]) == len(vocab["tokens"]) == vocab["vocab_size"]
    assert {"Q1", "Q10", "[TIMELINE_END]", INTERVAL_LONG} <= set(vocab["tokens"])
    assert len(vocab["interval_tokens"]) == 13
    stats = json.loads((tok / "stats.json").read_text())
    assert stats["vocab_size"] == len(vocab["tokens"])
    for split in SPLITS:
        d = tok / split
        t = np.load(d / "tokens.npy", mmap_mode="r")
        o = np.load(d / "offsets.npy", mmap_mode="r")
        tm = np.load(d / "times.npy", mmap_mode="r")
        s = np.load(d / "subject_ids.npy", mmap_mode="r")
        assert t.dtype == np.uint16 and o.dtype == tm.dtype == s.dtype == np.int64
        assert len(o) == len(s) + 1 and o[0] == 0 and o[-1] == len(t) == len(tm)
        assert (np.diff(o) >= STATIC_PREFIX_LEN + 1).all()
        assert stats["splits"][split] == {"n_subjects": len(s), "n_tokens": len(t)}
        assert sorted(s.tolist()) == sorted(k for k, v in splits.items() if v == split)
        assert t.max() < len(vocab["tokens"])
        for i in range(len(s)):
            seg, ts = t[o[i] : o[i + 1]], tm[o[i] : o[i + 1]]
            assert vocab["groups"][seg[0]] == "GENDER" and vocab["groups"][seg[3]] == "AGE"
            assert vocab["tokens"][seg[-1]] == "[TIMELINE_END]"
            assert (np.diff(ts) >= 0).all()  # times non-decreasing within a subject
            assert ts[0] < ts[STATIC_PREFIX_LEN]  # prefix carries birth, strictly before any event


def test_splits_disjoint(synth, demo):
    for tok in (synth[1], demo[1]):
        ids = [set(np.load(tok / s / "subject_ids.npy").tolist()) for s in SPLITS]
        assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
        assert all(ids)


def test_output_written_atomically(tmp_path):
    events, splits = synthetic_events(15, seed=3)
    meds = write_meds(tmp_path / "meds", events, splits)
    out = tmp_path / "tok"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    tokenize(meds, out, TokenizeSettings(min_count=1))
    assert not (out / "stale.txt").exists() and (out / "vocab.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tok")]


# --------------------------------------------------------------------------- vocabulary from train only


def _tiny(tmp_path: Path, extra_held_out: list[dict]) -> Path:
    events, splits = [], {}
    for k, sid in enumerate(range(1, 9)):
        splits[sid] = "train" if k < 6 else ("tuning" if k == 6 else "held_out")
        events += [ev(sid, None, "GENDER//M"), ev(sid, "2050-01-01", "MEDS_BIRTH")]
        t0 = pd.Timestamp("2110-03-01 08:00")
        events += [ev(sid, t0, "ADMISSION//URGENT", hadm_id=sid * 10), ev(sid, t0, "RACE//WHITE", hadm_id=sid * 10)]
        events += [ev(sid, t0 + pd.Timedelta(hours=h), "LAB//1//mg/dL", float(h + sid)) for h in range(1, 6)]
        events += [ev(sid, t0 + pd.Timedelta(days=3), "ICD10CM//I509", hadm_id=sid * 10)]
        events += [ev(sid, t0 + pd.Timedelta(days=3), "DISCHARGE//HOME", hadm_id=sid * 10)]
        if sid == 1:
            events += [ev(sid, t0 + pd.Timedelta(days=4), "MEDICATION//Rare")]  # once in train
    for e in extra_held_out:
        events.append(e)
    return write_meds(tmp_path / "meds", events, splits)


def test_held_out_only_codes_map_to_unknown(tmp_path):
    t = pd.Timestamp("2110-03-05 08:00")
    meds = _tiny(tmp_path, [ev(8, t, "MEDICATION//HeldOutOnly"), ev(8, t, "ICD10CM//Z9981"), ev(8, t, "BRANDNEW//x"),
                            ev(8, t, "LAB//999//mg/dL", 3.0)])
    tokenize(meds, tmp_path / "tok", TokenizeSettings(min_count=2))
    vocab = Vocab.load(tmp_path / "tok")
    assert "MEDICATION//HeldOutOnly" not in vocab.token_to_id and "MEDICATION//Rare" not in vocab.token_to_id
    split = TokenSplit(tmp_path / "tok" / "held_out")
    i = int(np.flatnonzero(np.asarray(split.subject_ids) == 8)[0])
    toks = [vocab.tokens[x] for x in split.subject(i)[0]]
    tail = toks[toks.index("MEDICATION//[UNK]") :]
    assert tail[:5] == ["MEDICATION//[UNK]", "ICD10CM//[UNK]", "ICD10CM_DETAIL//[UNK]", "[UNK]", "LAB//[UNK]"]
    assert tail[5] == "[TIMELINE_END]"  # an unknown numeric item loses its value token
    # the rare train code (1 < min_count) is unknown in train too
    tr = TokenSplit(tmp_path / "tok" / "train")
    toks0 = [vocab.tokens[x] for x in tr.subject(int(np.flatnonzero(np.asarray(tr.subject_ids) == 1)[0]))[0]]
    assert "MEDICATION//[UNK]" in toks0


def test_decile_edges_depend_only_on_train(tmp_path):
    events, splits = synthetic_events(40, seed=5)
    meds1 = write_meds(tmp_path / "a", events, splits)
    perturbed = [dict(e) for e in events]
    for e in perturbed:
        if splits[e["subject_id"]] != "train" and e["numeric_value"] is not None:
            e["numeric_value"] = e["numeric_value"] * 100 + 7
    meds2 = write_meds(tmp_path / "b", perturbed, splits)
    tokenize(meds1, tmp_path / "t1", TokenizeSettings(min_count=1))
    tokenize(meds2, tmp_path / "t2", TokenizeSettings(min_count=1))
    v1, v2 = (json.loads((tmp_path / t / "vocab.json").read_text()) for t in ("t1", "t2"))
    assert v1["decile_edges"] == v2["decile_edges"] and v1["tokens"] == v2["tokens"]
    assert np.array_equal(np.load(tmp_path / "t1/train/tokens.npy"), np.load(tmp_path / "t2/train/tokens.npy"))
    assert not np.array_equal(np.load(tmp_path / "t1/held_out/tokens.npy"), np.load(tmp_path / "t2/held_out/tokens.npy"))
    # the edges are the train split's linear-interpolated deciles
    train = pd.DataFrame([e for e in events if splits[e["subject_id"]] == "train"])
    vals = train.loc[train["code"] == "LAB//50912//mg/dL", "numeric_value"].astype("float32").astype(float)
    np.testing.assert_allclose(v1["decile_edges"]["LAB//50912//mg/dL"], np.quantile(vals, np.arange(1, 10) / 10), rtol=1e-6)


# --------------------------------------------------------------------------- stream content


def test_interval_tokens(tmp_path):
    t0 = pd.Timestamp("2120-01-01 00:00")
    gaps = [pd.Timedelta(minutes=3), pd.Timedelta(minutes=10), pd.Timedelta(days=400), pd.Timedelta(hours=30)]
    events = [ev(1, None, "GENDER//F"), ev(1, "2060-06-01", "MEDS_BIRTH")]
    t = t0
    events.append(ev(1, t, "X//a"))
    for g in gaps:
        t = t + g
        events.append(ev(1, t, "X//a"))
    meds = write_meds(tmp_path / "meds", events * 1, {1: "train"})
    tokenize(meds, tmp_path / "tok", TokenizeSettings(min_count=1))
    v = Vocab.load(tmp_path / "tok")
    toks = [v.tokens[x] for x in TokenSplit(tmp_path / "tok" / "train").subject(0)[0]]
    rem = pd.Timedelta(days=400).value // 1000 - 2 * SIX_MONTHS_US
    rem_tok = INTERVAL_TOKENS[int(np.searchsorted(INTERVAL_EDGES_US, rem, side="right")) - 1]
    assert rem_tok == "[INTERVAL//1mt-3mt]"
    assert toks == ["GENDER//F", "RACE//UNKNOWN", "MARITAL//UNKNOWN", "AGE//55-59",
                    "X//a", "X//a", "[INTERVAL//5m-15m]", "X//a", INTERVAL_LONG, INTERVAL_LONG, rem_tok, "X//a",
                    "[INTERVAL//1d-3d]", "X//a", "[TIMELINE_END]"]


def test_static_prefix_uses_first_admission(tmp_path):
    events = [ev(1, None, "GENDER//M"), ev(1, "2050-01-01", "MEDS_BIRTH"),
              ev(1, "2111-05-01", "LAB//1//x", 1.0),
              ev(1, "2112-01-01", "MARITAL_STATUS//SINGLE", hadm_id=1), ev(1, "2112-01-01", "RACE//ASIAN - KOREAN", hadm_id=1),
              ev(1, "2115-01-01", "MARITAL_STATUS//MARRIED", hadm_id=2), ev(1, "2115-01-01", "RACE//WHITE", hadm_id=2)]
    meds = write_meds(tmp_path / "meds", events, {1: "train"})
    tokenize(meds, tmp_path / "tok", TokenizeSettings(min_count=1))
    v = Vocab.load(tmp_path / "tok")
    toks = [v.tokens[x] for x in TokenSplit(tmp_path / "tok" / "train").subject(0)[0]]
    # age at the first timeline event (2111-05-01: 61), race/marital of the first admission
    assert toks[:4] == ["GENDER//M", "RACE//ASIAN", "MARITAL//SINGLE", "AGE//60-64"]
    assert "MARITAL_STATUS//MARRIED" in toks and not any(t.startswith("RACE//W") for t in toks)


def test_static_prefix_never_reveals_a_later_admission(tmp_path):
    """First admission has no marital status: the prefix says UNKNOWN, not the second admission's value."""
    events = [ev(1, None, "GENDER//F"), ev(1, "2050-01-01", "MEDS_BIRTH"),
              ev(1, "2112-01-01", "ADMISSION//URGENT", hadm_id=1), ev(1, "2112-01-01", "RACE//WHITE", hadm_id=1),
              ev(1, "2115-01-01", "ADMISSION//URGENT", hadm_id=2),
              ev(1, "2115-01-01", "MARITAL_STATUS//WIDOWED", hadm_id=2), ev(1, "2115-01-01", "RACE//WHITE", hadm_id=2)]
    meds = write_meds(tmp_path / "meds", events, {1: "train"})
    tokenize(meds, tmp_path / "tok", TokenizeSettings(min_count=1))
    v = Vocab.load(tmp_path / "tok")
    toks = [v.tokens[x] for x in TokenSplit(tmp_path / "tok" / "train").subject(0)[0]]
    assert toks[:3] == ["GENDER//F", "RACE//WHITE", "MARITAL//UNKNOWN"]


def _expected_events(df: pd.DataFrame, vocab: Vocab) -> list[tuple]:
    """The subject's clinical events in MEDS order, with the documented lossy steps applied."""
    out = []
    for code, value in zip(df["code"], df["numeric_value"]):
        toks = expand_code(code)
        if not toks:
            continue
        shown = [t if t in vocab.token_to_id else vocab.tokens[vocab.lookup(t)] for t in toks]
        q = None
        if len(toks) == 1 and toks[0] in vocab.edges and pd.notna(value):
            q = 1 + int((np.float64(value) >= np.asarray(vocab.edges[toks[0]])).sum())
        out.append((shown, q))
    return out


@pytest.mark.parametrize("which", ["synth", "demo"])
def test_decode_roundtrip(which, synth, demo):
    meds, tok = (synth[0], synth[1]) if which == "synth" else demo
    vocab = Vocab.load(tok)
    for split in SPLITS:
        df = _read_split(meds, split)
        df = df[df["time"].notna()]
        st = TokenSplit(tok / split)
        for i, sid in enumerate(np.asarray(st.subject_ids).tolist()):
            sub = df[df["subject_id"] == sid]
            tokens, _ = st.subject(i)
            dec = decode(tokens, vocab)
            events = [e for e in dec if e["kind"] == "event"]
            exp = _expected_events(sub, vocab)
            assert [(e["tokens"], e["quantile"]) for e in events] == exp, (which, split, sid)
            # the interval bins bound the true gaps between consecutive events
            t = sub.loc[sub["code"].map(lambda c: bool(expand_code(c))), "time"].to_numpy()
            t = t.astype("datetime64[us]").astype(np.int64)
            gaps = np.diff(t)
            for e, g in zip(events[1:], gaps):
                lo, hi = e["elapsed_us"]
                assert lo <= g < hi or (lo == hi == g), (sid, e, g)
            assert dec[-1] == {"kind": "end"} and [e["kind"] for e in dec[:4]] == ["static"] * 4


def test_decode_restores_codes_when_known(synth):
    from ehrscale.tokens.encode import encode

    meds, tok, _, _ = synth
    vocab = Vocab.load(tok)
    st = TokenSplit(tok / "train")
    df = _read_split(meds, "train")
    sid = int(st.subject_ids[0])
    patient = df[df["subject_id"] == sid]
    raw = [c for c in patient["code"] if expand_code(c)]
    assert [e["code"] for e in decode(st.subject(0)[0], vocab) if e["kind"] == "event"] == raw
    enc = encode(patient, vocab)  # encoding one patient alone gives the same stream
    assert np.array_equal(enc.tokens, st.subject(0)[0]) and np.array_equal(enc.times, st.subject(0)[1])


def test_demo_vocab_and_dtype(demo):
    _, tok = demo
    vocab = json.loads((tok / "vocab.json").read_text())
    stats = json.loads((tok / "stats.json").read_text())
    assert 500 < vocab["vocab_size"] < 65536 and vocab["dtype"] == "uint16"
    assert sum(s["n_subjects"] for s in stats["splits"].values()) == 100
    # edges exist only for items with numeric values, and are non-decreasing
    for k, e in vocab["decile_edges"].items():
        assert len(e) == 9 and np.all(np.diff(e) >= 0), k


# --------------------------------------------------------------------------- errors


def test_bad_settings_key(tmp_path, capsys):
    with pytest.raises(EhrscaleError, match="tokenize.min_cnt"):
        load_settings(TokenizeSettings, '{"min_cnt": 3}', "tokenize")
    assert cli_main(["tokenize", str(tmp_path), str(tmp_path / "o"), "--settings", '{"bogus": 1}']) == 2
    assert "tokenize.bogus" in capsys.readouterr().err
    with pytest.raises(EhrscaleError, match="min_count"):
        TokenizeSettings(min_count=0)


def test_missing_meds_dir(tmp_path):
    with pytest.raises(EhrscaleError, match="MEDS directory not found: .*nope"):
        tokenize(tmp_path / "nope", tmp_path / "tok")
    (tmp_path / "m").mkdir()
    with pytest.raises(EhrscaleError, match="no data/ folder"):
        tokenize(tmp_path / "m", tmp_path / "tok")


def test_empty_cohort(tmp_path):
    events = [ev(1, None, "GENDER//F"), ev(1, "2110-01-01", "X//a")]
    meds = write_meds(tmp_path / "meds", events, {1: "held_out"})
    for f in (meds / "data" / "train").glob("*.parquet"):
        f.unlink()
    with pytest.raises(EhrscaleError, match="empty cohort"):
        tokenize(meds, tmp_path / "tok")
    assert not (tmp_path / "tok").exists()
    shutil.rmtree(meds)
    meds = write_meds(tmp_path / "meds", events, {1: "held_out"})  # train shard with zero rows
    with pytest.raises(EhrscaleError, match="empty cohort"):
        tokenize(meds, tmp_path / "tok")


def test_row_groups_and_plain_strings_give_same_stream(synth, tmp_path):
    """Shards with many row groups (dictionary unification) or plain string codes encode identically."""
    import pyarrow as pa

    from ehrscale.tokens.encode import COLUMNS, CodeTable, encode_table

    meds, tok, _, _ = synth
    vocab = Vocab.load(tok)
    shard = sorted((meds / "data" / "train").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table, tmp_path / "rg.parquet", row_group_size=97)
    ref = encode_table(pq.read_table(shard, columns=COLUMNS, read_dictionary=["code"]), vocab, CodeTable(vocab))
    many = encode_table(pq.read_table(tmp_path / "rg.parquet", columns=COLUMNS, read_dictionary=["code"]), vocab, CodeTable(vocab))
    plain = encode_table(pq.read_table(shard, columns=COLUMNS), vocab, CodeTable(vocab))
    assert pq.ParquetFile(tmp_path / "rg.parquet").num_row_groups > 3
    for other in (many, plain):
        for k in ("tokens", "times", "subject_ids", "lengths"):
            assert np.array_equal(getattr(ref, k), getattr(other, k)), k
    # an out-of-order shard is re-sorted by (subject_id, time) before encoding
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    enc = encode_table(shuffled.select(COLUMNS), vocab, CodeTable(vocab))
    assert np.array_equal(enc.subject_ids, ref.subject_ids) and np.array_equal(enc.lengths, ref.lengths)
    assert (np.diff(enc.times[: enc.lengths[0]]) >= 0).all()


def test_subject_spanning_shards_is_an_error(tmp_path):
    events = [ev(1, None, "GENDER//F"), ev(1, "2110-01-01", "X//a"), ev(2, "2110-01-01", "X//a")]
    meds = write_meds(tmp_path / "meds", events, {1: "train", 2: "train"})
    t = pq.read_table(meds / "data" / "train" / "0.parquet")
    pq.write_table(t.slice(0, 1), meds / "data" / "train" / "0.parquet")
    pq.write_table(t.slice(1), meds / "data" / "train" / "1.parquet")
    with pytest.raises(EhrscaleError, match="spans several shards"):
        tokenize(meds, tmp_path / "tok", TokenizeSettings(min_count=1))
