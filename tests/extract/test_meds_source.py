"""Any MEDS dataset in (issue 14): import with validation, the generic tokenizer, ACES tasks.

The foreign dataset is the MIMIC-IV demo as written by the official MIMIC_IV_MEDS ETL, vendored in
tests/data/mimic-iv-demo-meds (ODbL, see its README and LICENSE)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrscale.core.errors import EhrscaleError
from ehrscale.extract.dataset import validate_meds
from ehrscale.extract.meds_import import import_meds
from ehrscale.extract.settings import ExtractSettings
from ehrscale.extract.splits import assign_splits
from ehrscale.labels.make import make_labels
from ehrscale.labels.tasks import load_task
from ehrscale.tokens.codemap import CodeMap, load_code_map
from ehrscale.tokens.encode import TokenizeSettings, tokenize
from ehrscale.tokens.vocab import INTERVAL_TOKENS, STATIC_PREFIX_LEN, Vocab
from support import ROOT
from support.meds import ev, write_meds

FOREIGN = ROOT / "tests" / "data" / "mimic-iv-demo-meds"
MEDS_DEV = ROOT / "config" / "tasks" / "meds_dev"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("foreign") / "meds"
    summary = import_meds(FOREIGN, out)
    assert summary["splits_from"] == "dataset" and summary["n_subjects"] == 100
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env_path = str(ROOT / "src")
    return subprocess.run([sys.executable, "-m", "ehrscale", *args], capture_output=True, text=True,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=300)


# --------------------------------------------------------------------------- import


def test_import_keeps_the_datasets_splits_and_writes_meds(imported):
    splits = pq.read_table(imported / "metadata" / "subject_splits.parquet").to_pandas()
    theirs = pq.read_table(FOREIGN / "metadata" / "subject_splits.parquet").to_pandas()
    assert dict(zip(splits.subject_id, splits.split)) == dict(zip(theirs.subject_id, theirs.split))
    n = 0
    for split in ("train", "tuning", "held_out"):
        table = pq.read_table(imported / "data" / split / "0.parquet")
        meds.DataSchema.validate(table)
        assert table.schema.field("hadm_id").type == pa.int64()  # a string in the source
        df = table.to_pandas()
        assert set(df.subject_id) == set(splits.subject_id[splits.split == split])
        n += len(df)
        # same events as the source shard (MEDS columns), in the same order
        src = pq.read_table(FOREIGN / "data" / split / "0.parquet").to_pandas()
        assert src.code.tolist() == df.code.tolist()
        assert (src.hadm_id.dropna().astype("int64").tolist() == df.hadm_id.dropna().tolist())
    assert n == 356_063


def test_import_writes_shards_of_whole_subjects_that_join_to_the_one_shard_import(imported, tmp_path):
    """extract.subjects_per_shard bounds each shard (a shard is sorted alone, so memory follows it);
    read in shard order, the shards are the same rows as one shard per split."""
    out = tmp_path / "sharded"
    import_meds(FOREIGN, out, ExtractSettings(subjects_per_shard=7))
    for split in ("train", "tuning", "held_out"):
        files = sorted((out / "data" / split).glob("*.parquet"), key=lambda p: int(p.stem))
        parts = [pq.read_table(f) for f in files]
        assert all(len(set(t.column("subject_id").to_pylist())) <= 7 for t in parts)
        assert len(files) == -(-len(set(pq.read_table(imported / "data" / split).column("subject_id").to_pylist())) // 7)
        assert pa.concat_tables(parts).equals(pq.read_table(imported / "data" / split / "0.parquet"))


def test_import_assigns_keyed_hash_splits_without_subject_splits(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FOREIGN, src)
    (src / "metadata" / "subject_splits.parquet").unlink()
    summary = import_meds(src, tmp_path / "out", ExtractSettings(split_salt="s1"))
    assert summary["splits_from"] == "keyed hash"
    got = pq.read_table(tmp_path / "out" / "metadata" / "subject_splits.parquet").to_pandas()
    assert got.split.tolist() == assign_splits(got.subject_id.to_numpy(), salt="s1").tolist()


def _bad_copy(tmp_path: Path) -> Path:
    src = tmp_path / "bad"
    write_meds(src, [ev(1, None, "GENDER//F"), ev(1, "2100-01-01", "MEDS_BIRTH"), ev(1, "2150-01-01", "LAB//x", 1.0),
                     ev(2, "2100-01-01", "MEDS_BIRTH"), ev(2, "2150-01-02", "LAB//x", 2.0)],
               {1: "train", 2: "held_out"})
    return src


def _rewrite(shard: Path, fn) -> None:
    pq.write_table(fn(pq.read_table(shard)), shard)


@pytest.mark.parametrize("case, words", [
    ("no_metadata", ["no metadata/ folder"]),
    ("string_subject_id", ["train/0.parquet", "'subject_id'", "int64"]),
    ("string_numeric_value", ["train/0.parquet", "'numeric_value'"]),
    ("missing_code", ["train/0.parquet", "missing column 'code'"]),
    ("unsorted", ["train/0.parquet", "not sorted", "'time'"]),
    ("two_splits_in_metadata", ["subject_splits.parquet", "subject 1 is in two splits", "'split'"]),
    ("two_splits_in_data", ["held_out/0.parquet", "subject 2", "'subject_id'"]),
    ("subject_in_two_shards", ["subject 1 spans several shards", "'subject_id'"]),
])
def test_bad_meds_input_clear_error_naming_shard_and_column(tmp_path, case, words):
    src = _bad_copy(tmp_path)
    train = src / "data" / "train" / "0.parquet"
    if case == "no_metadata":
        shutil.rmtree(src / "metadata")
    elif case == "string_subject_id":
        _rewrite(train, lambda t: t.set_column(0, "subject_id", pc_cast(t.column("subject_id"), pa.string())))
    elif case == "string_numeric_value":
        i = pq.read_schema(train).names.index("numeric_value")
        _rewrite(train, lambda t: t.set_column(i, "numeric_value", pc_cast(t.column("numeric_value"), pa.string())))
    elif case == "missing_code":
        _rewrite(train, lambda t: t.drop_columns(["code"]))
    elif case == "unsorted":
        _rewrite(train, lambda t: t.take(pa.array(list(range(t.num_rows))[::-1])))
    elif case == "two_splits_in_metadata":
        pq.write_table(pa.table({"subject_id": pa.array([1, 2, 1], pa.int64()),
                                 "split": ["train", "held_out", "tuning"]}), src / "metadata" / "subject_splits.parquet")
    elif case == "two_splits_in_data":
        pq.write_table(pa.table({"subject_id": pa.array([1, 2], pa.int64()), "split": ["train", "train"]}),
                       src / "metadata" / "subject_splits.parquet")
    elif case == "subject_in_two_shards":
        shutil.copyfile(train, src / "data" / "train" / "1.parquet")
    out = tmp_path / "out"
    result = run_cli("meds-import", str(src), str(out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in result.stderr, (w, result.stderr)
    assert not out.exists()  # never a partial output
    with pytest.raises(EhrscaleError):
        validate_meds(src)


def pc_cast(col, typ):
    import pyarrow.compute as pc

    return pc.cast(col, typ)


# --------------------------------------------------------------------------- generic tokenizer


def test_generic_code_map_splits_hierarchy_and_bins_per_raw_code(tmp_path):
    events, splits = [], {}
    for sid in range(1, 41):
        splits[sid] = "train" if sid <= 30 else "held_out"
        events += [ev(sid, None, "GENDER//" + "FM"[sid % 2]), ev(sid, "2100-01-01", "MEDS_BIRTH"),
                   ev(sid, "2160-06-01 00:00", "VITAL//HR//bpm", float(sid)),
                   ev(sid, "2160-06-01 00:00", "VITAL//HR//min", float(1000 + sid)),
                   ev(sid, "2160-06-03 00:00", "DX//ICD10//I509")]
    tokens = tmp_path / "tokens"
    tokenize(write_meds(tmp_path / "meds", events, splits), tokens, TokenizeSettings(min_count=1, code_map="generic"))
    vocab = Vocab.load(tokens)
    assert vocab.code_map == load_code_map("generic")
    for t in ("VITAL//HR", "VITAL_DETAIL//bpm", "VITAL_DETAIL//min", "DX//ICD10", "DX_DETAIL//I509"):
        assert t in vocab.token_to_id, t
    assert all(t in vocab.token_to_id for t in INTERVAL_TOKENS) and len(INTERVAL_TOKENS) == 13
    # the two raw codes share their category token but keep their own train quantile edges
    e_bpm, e_min = vocab.edges["VITAL//HR//bpm"], vocab.edges["VITAL//HR//min"]
    assert np.allclose(e_bpm, np.quantile(np.arange(1, 31), np.arange(1, 10) / 10))
    assert min(e_min) > 1000
    toks = np.load(tokens / "held_out" / "tokens.npy")
    offsets = np.load(tokens / "held_out" / "offsets.npy")
    sids = np.load(tokens / "held_out" / "subject_ids.npy")
    names = [vocab.tokens[t] for t in toks[offsets[0]:offsets[1]]]
    sid = int(sids[0])
    # static prefix: gender from the null-time code, age from MEDS_BIRTH (60 years at the first event)
    assert names[:STATIC_PREFIX_LEN] == ["GENDER//" + "FM"[sid % 2], "RACE//UNKNOWN", "MARITAL//UNKNOWN", "AGE//60-64"]
    # held-out value sid > 30 is above every train edge: the top bin
    assert names[STATIC_PREFIX_LEN:STATIC_PREFIX_LEN + 3] == ["VITAL//HR", "VITAL_DETAIL//bpm", "Q10"]
    assert "[INTERVAL//1d-3d]" in names and names[-3:] == ["DX//ICD10", "DX_DETAIL//I509", "[TIMELINE_END]"]


def test_mimic_code_map_is_the_default_and_the_yaml():
    assert load_code_map("mimic") == CodeMap()
    m = load_code_map("mimic_iv_meds")
    assert m.expand("DIAGNOSIS//ICD//10//I509") == ("ICD10CM//I50", "ICD10CM_DETAIL//9")
    assert m.is_first_admission("HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM")
    with pytest.raises(EhrscaleError, match="code_map"):
        TokenizeSettings(code_map="no_such_map")


@pytest.mark.parametrize("code_map", ["generic", "mimic_iv_meds"])
def test_foreign_dataset_tokenizes(imported, tmp_path, code_map):
    stats = tokenize(imported, tmp_path / "tokens", TokenizeSettings(code_map=code_map))
    assert stats["splits"]["train"]["n_subjects"] == 80
    vocab = Vocab.load(tmp_path / "tokens")
    toks = np.load(tmp_path / "tokens" / "train" / "tokens.npy")
    offsets = np.load(tmp_path / "tokens" / "train" / "offsets.npy")
    names = np.array(vocab.tokens)
    firsts = names[toks[offsets[:-1]]]
    assert all(f.startswith("GENDER//") and f != "GENDER//UNKNOWN" for f in firsts)
    ages = names[toks[offsets[:-1] + 3]]
    assert (ages != "AGE//UNKNOWN").all()  # every subject has a MEDS_BIRTH
    races = names[toks[offsets[:-1] + 1]]
    assert (races != "RACE//UNKNOWN").mean() > 0.8
    q = [vocab.token_to_id[f"Q{i}"] for i in range(1, 11)]
    assert np.isin(toks, q).sum() > 10_000  # labs carry their value bins
    if code_map == "mimic_iv_meds":
        assert "ICD9CM//428" in vocab.token_to_id and "ADMISSION//[UNK]" in vocab.token_to_id


# --------------------------------------------------------------------------- ACES tasks


def test_meds_dev_readmission_runs_unchanged_through_aces(imported, tmp_path):
    task = MEDS_DEV / "readmission_general_hospital_30d.yaml"
    spec = load_task(task)
    out = tmp_path / "labels" / "readmission.parquet"
    make_labels(imported, [spec], [out], MEDS_DEV / "predicates" / "MIMIC-IV.yaml")
    labels = pq.read_table(out)
    meds.LabelSchema.validate(labels)
    got = labels.to_pandas()
    examples = pd.read_parquet(tmp_path / "labels" / "examples" / "readmission.parquet")
    assert examples.hadm_id.isna().all() and (examples.subject_id == got.subject_id).all()
    # the task's semantics, computed independently: trigger at each hospital discharge; label: a hospital
    # admission in (t, t + 30d]; kept when an admission precedes it and the subject has an event after t + 30d
    events = pd.concat(pd.read_parquet(p) for p in sorted((imported / "data").rglob("*.parquet")))
    events = events[events.time.notna()]
    adm = events[events.code.str.startswith("HOSPITAL_ADMISSION//")]
    dis = events[events.code.str.startswith("HOSPITAL_DISCHARGE//")][["subject_id", "time"]].drop_duplicates()
    last = events.groupby("subject_id").time.max()
    rows = []
    for sid, t in dis.itertuples(index=False):
        a = adm.time[adm.subject_id == sid]
        if not (a <= t).any() or last[sid] <= t + pd.Timedelta(days=30):
            continue
        rows.append((sid, t, bool(((a > t) & (a <= t + pd.Timedelta(days=30))).any())))
    want = pd.DataFrame(rows, columns=["subject_id", "prediction_time", "want"])
    want["prediction_time"] = want.prediction_time.astype("datetime64[us]")
    got = got.sort_values(["subject_id", "prediction_time"]).reset_index(drop=True)
    want = want.sort_values(["subject_id", "prediction_time"]).reset_index(drop=True)
    assert len(got) > 100 and 0 < got.boolean_value.mean() < 1
    assert got.subject_id.tolist() == want.subject_id.tolist()
    assert (got.prediction_time.to_numpy() == want.prediction_time.to_numpy()).all()
    assert got.boolean_value.tolist() == want.want.tolist()


@pytest.fixture(scope="module")
def own_extraction(tmp_path_factory):
    """ehrscale's own extraction of the same demo, with its four task files' labels."""
    from ehrscale.extract.raw import extract

    root = tmp_path_factory.mktemp("own")
    extract(ROOT / "tests" / "data" / "mimic-iv-demo", root / "meds")
    specs = [load_task(ROOT / "config" / "tasks" / f"{t}.yaml") for t in OUR_TASKS]
    make_labels(root / "meds", specs, [root / "labels" / f"{t}.parquet" for t in OUR_TASKS])
    return root


OUR_TASKS = ("in_hospital_mortality", "long_los", "readmission_30d", "icu_admission")


@pytest.mark.parametrize("task", OUR_TASKS)
def test_our_tasks_as_aces_configs_give_exactly_our_labels(own_extraction, task):
    from ehrscale.labels.aces import aces_labels

    own = pd.read_parquet(own_extraction / "labels" / f"{task}.parquet")
    aces = aces_labels(own_extraction / "meds", ROOT / "config" / "tasks" / "aces" / f"{task}.yaml")
    if task == "long_los":  # ACES labels by presence: its label is "discharged within 7 days"
        aces["boolean_value"] = ~aces["boolean_value"]
    assert len(own) > 200 and 0 < own.boolean_value.mean() < 1
    key = ["subject_id", "prediction_time"]
    own, aces = own.sort_values(key).reset_index(drop=True), aces.sort_values(key).reset_index(drop=True)
    assert own.subject_id.tolist() == aces.subject_id.tolist()
    assert (own.prediction_time.to_numpy() == aces.prediction_time.to_numpy()).all()
    assert own.boolean_value.tolist() == aces.boolean_value.tolist()


def test_aces_task_without_its_predicates_is_a_clear_error(imported, tmp_path):
    spec = load_task(MEDS_DEV / "mortality_in_icu_first_24h.yaml")
    with pytest.raises(EhrscaleError, match="ACES task"):
        make_labels(imported, [spec], [tmp_path / "x.parquet"])
    assert not (tmp_path / "x.parquet").exists()


def test_config_source_meds_needs_meds_dir():
    from ehrscale.core.config import load_config, validate_config

    config = load_config(ROOT / "config" / "demo-meds.yaml")
    del config["dataset"]["meds_dir"]
    with pytest.raises(EhrscaleError, match="meds_dir"):
        validate_config(config)


@pytest.mark.parametrize("task", OUR_TASKS)
def test_our_aces_tasks_on_the_foreign_dataset_equal_our_labels_on_our_extraction(own_extraction, imported, task):
    """The same 100 patients through two ETLs: the ACES task with MIMIC_IV_MEDS's predicates on the
    official ETL's output gives exactly our task file's labels on our own extraction."""
    from ehrscale.labels.aces import aces_labels

    own = pd.read_parquet(own_extraction / "labels" / f"{task}.parquet")
    aces = aces_labels(imported, ROOT / "config" / "tasks" / "aces" / f"{task}.yaml",
                       ROOT / "config" / "tasks" / "aces" / "predicates" / "MIMIC_IV_MEDS.yaml")
    if task == "long_los":
        aces["boolean_value"] = ~aces["boolean_value"]
    key = ["subject_id", "prediction_time"]
    own, aces = own.sort_values(key).reset_index(drop=True), aces.sort_values(key).reset_index(drop=True)
    assert aces[own.columns].equals(own)
