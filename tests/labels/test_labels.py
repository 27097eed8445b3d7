"""Task labels (declarative YAML) and probe inputs without lookahead."""

from __future__ import annotations

from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from ehrscale.cli import main as cli_main
from ehrscale.core.errors import EhrscaleError
from ehrscale.labels.compute import compute_labels, read_events
from ehrscale.labels.make import make_labels
from ehrscale.labels.schema import LABEL_SCHEMA
from ehrscale.labels.tasks import TaskSpec, load_task
from ehrscale.probe.inputs import probe_inputs
from ehrscale.tokens.encode import TokenizeSettings, tokenize
from ehrscale.tokens.store import TokenSplit, probe_input, probe_span, to_us
from ehrscale.tokens.vocab import STATIC_PREFIX_LEN, Vocab
from support import DEMO, TASKS
from support.meds import ev, synthetic_events, write_meds

DEFAULT_TASKS = ("in_hospital_mortality", "long_los", "readmission_30d", "icu_admission")


@pytest.fixture(scope="module")
def demo(demo_pipeline):
    return demo_pipeline


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_labels")
    events, splits = synthetic_events(50, seed=7)
    meds = write_meds(root / "meds", events, splits, shards_per_split=2)
    tokenize(meds, root / "tok", TokenizeSettings(min_count=2))
    specs = [load_task(TASKS / f"{t}.yaml") for t in DEFAULT_TASKS]
    make_labels(meds, specs, [root / "labels" / f"{s.name}.parquet" for s in specs])
    return root


@pytest.fixture(scope="module")
def csv():
    d = DEMO / "hosp"
    a = pd.read_csv(d / "admissions.csv.gz", parse_dates=["admittime", "dischtime", "deathtime"])
    icu = pd.read_csv(DEMO / "icu" / "icustays.csv.gz", parse_dates=["intime", "outtime"])
    return a, icu


def test_default_task_files_exist_and_parse():
    for t in DEFAULT_TASKS:
        spec = load_task(TASKS / f"{t}.yaml")
        assert spec.name == t


# --------------------------------------------------------------------------- hand-computed counts on the demo


def _labels(demo, task) -> pd.DataFrame:
    """The MEDS label file with its examples file's hadm_id and split (same rows, same order)."""
    labels = pq.read_table(demo / "labels" / f"{task}.parquet").to_pandas()
    examples = pq.read_table(demo / "labels" / "examples" / f"{task}.parquet").to_pandas()
    assert (labels["subject_id"] == examples["subject_id"]).all()
    assert (labels["prediction_time"] == examples["prediction_time"]).all()
    return labels.assign(split=examples["split"], hadm_id=examples["hadm_id"])


def test_label_schema(demo):
    for t in DEFAULT_TASKS:
        table = pq.read_table(demo / "labels" / f"{t}.parquet")
        meds.LabelSchema.validate(table)  # the package's own check
        assert set(table.schema.names) - set(meds.LabelSchema.schema().names) == set(), t  # nothing else
        assert table.schema.equals(LABEL_SCHEMA, check_metadata=False), t
        examples = pq.read_table(demo / "labels" / "examples" / f"{t}.parquet")
        assert examples.schema.names == ["subject_id", "prediction_time", "hadm_id", "split"]
        df = _labels(demo, t)
        assert df["hadm_id"].is_unique and len(df) > 0
        splits = pd.read_parquet(demo / "meds" / "metadata" / "subject_splits.parquet").set_index("subject_id")
        assert (df["split"].to_numpy() == splits.loc[df["subject_id"], "split"].to_numpy()).all()


def test_mortality_and_los_match_csv(demo, csv):
    a, _ = csv
    pt = a["admittime"] + pd.Timedelta(hours=24)
    died = a["deathtime"].notna() | (a["discharge_location"] == "DIED")
    inc = (a["dischtime"] > pt) & (a["deathtime"].isna() | (a["deathtime"] > pt))
    mort, los = _labels(demo, "in_hospital_mortality"), _labels(demo, "long_los")
    assert len(mort) == len(los) == int(inc.sum())
    assert set(mort["hadm_id"]) == set(a.loc[inc, "hadm_id"])
    assert int(mort["boolean_value"].sum()) == int((inc & died).sum())
    assert int(los["boolean_value"].sum()) == int((inc & (a["dischtime"] - a["admittime"] > pd.Timedelta(days=7))).sum())
    exp_pt = dict(zip(a["hadm_id"], pt))
    assert all(exp_pt[h] == p for h, p in zip(mort["hadm_id"], mort["prediction_time"]))


def test_readmission_matches_csv(demo, csv):
    a, _ = csv
    alive = ~(a["deathtime"].notna() | (a["discharge_location"] == "DIED"))
    m = a[["subject_id", "hadm_id", "dischtime"]].merge(a[["subject_id", "hadm_id", "admittime"]], on="subject_id")
    hit = m[(m["hadm_id_x"] != m["hadm_id_y"]) & (m["admittime"] > m["dischtime"])
            & (m["admittime"] <= m["dischtime"] + pd.Timedelta(days=30))]
    y = a["hadm_id"].isin(hit["hadm_id_x"])
    got = _labels(demo, "readmission_30d")
    assert len(got) == int(alive.sum())
    assert int(got["boolean_value"].sum()) == int((y & alive).sum())
    assert dict(zip(got["hadm_id"], got["boolean_value"])) == dict(zip(a.loc[alive, "hadm_id"], y[alive]))


def test_icu_admission_matches_csv(demo, csv):
    a, icu = csv
    first = a["hadm_id"].map(icu.groupby("hadm_id")["intime"].min())
    inc = first.isna() | (first > a["admittime"])
    got = _labels(demo, "icu_admission")
    assert len(got) == int(inc.sum())
    assert int(got["boolean_value"].sum()) == int((inc & first.notna()).sum())


def test_label_splits_match_token_splits(demo):
    for t in DEFAULT_TASKS:
        df = _labels(demo, t)
        for split, part in df.groupby("split"):
            sids = set(np.load(demo / "tok" / split / "subject_ids.npy").tolist())
            assert set(part["subject_id"]) <= sids, (t, split)


# --------------------------------------------------------------------------- no lookahead


def _starts_event(vocab: Vocab, token: int, previous: int) -> bool:
    """Independent of ehrscale.tokens.store: a token starts an event unless it is a value or code detail
    token, or follows an interval token (which belongs to the event after it)."""
    g, gp = vocab.groups[int(token)], vocab.groups[int(previous)]
    return not (g == "QUANTILE" or g.endswith("_DETAIL") or g == "ICD10PCS" or gp == "INTERVAL")


def _check_probes(root: Path, context_length: int) -> int:
    vocab = Vocab.load(root / "tok")
    n = 0
    for t in DEFAULT_TASKS:
        df = _labels(root, t)
        for split, part in df.groupby("split"):
            st = TokenSplit(root / "tok" / split)
            idx = st.index_of(part["subject_id"].to_numpy())
            times = to_us(part["prediction_time"].to_numpy())
            batch, lengths = probe_inputs(st, part["subject_id"].to_numpy(), part["prediction_time"].to_numpy(), context_length)
            for r, (i, pt) in enumerate(zip(idx.tolist(), times.tolist())):
                a, cut, end = probe_span(st, i, pt, context_length)
                x = probe_input(st, i, pt, context_length)
                tk, tm = np.asarray(st.tokens), np.asarray(st.times)
                # no token at or after the prediction time
                assert (tm[a : a + STATIC_PREFIX_LEN] < pt).all() and (tm[cut:end] < pt).all(), (t, i)
                # exactly the tokens strictly before, truncated from the left, prefix kept
                b = int(st.offsets[i + 1])
                body = np.arange(a + STATIC_PREFIX_LEN, b - 1)
                before = body[tm[body] < pt]
                keep = before[max(0, len(before) - (context_length - STATIC_PREFIX_LEN)) :]
                while len(keep) and keep[0] > body[0] and not _starts_event(vocab, tk[keep[0]], tk[keep[0] - 1]):
                    keep = keep[1:]  # the cut moves right to the next event boundary
                assert np.array_equal(x, np.concatenate([tk[a : a + STATIC_PREFIX_LEN], tk[keep]]))
                if len(keep) and keep[0] > body[0]:
                    assert len(before) - len(keep) >= len(before) - (context_length - STATIC_PREFIX_LEN)
                assert len(x) <= context_length and vocab.tokens[x[0]].startswith("GENDER//")
                assert "[TIMELINE_END]" not in {vocab.tokens[j] for j in x}
                assert lengths[r] == len(x) and np.array_equal(batch[r, : len(x)], x) and (batch[r, len(x) :] == 0).all()
                n += 1
    return n


@pytest.mark.parametrize("context_length", [64, 4096])
def test_probe_inputs_demo_no_lookahead(demo, context_length):
    assert _check_probes(demo, context_length) > 900


def test_probe_inputs_synth_no_lookahead(synth):
    assert _check_probes(synth, 48) > 100


def test_discharge_diagnoses_invisible_at_admission_tasks(demo):
    """Diagnoses of an admission sit at its dischtime: never in a 24 h / admission-time probe of it."""
    vocab = Vocab.load(demo / "tok")
    dx_ids = {i for i, g in enumerate(vocab.groups) if g.startswith(("ICD10CM", "ICD9CM", "DRG"))}
    events = read_events(demo / "meds", set())
    disch = events[events["code"].str.startswith("DISCHARGE//")].groupby("hadm_id")["time"].max()
    for task in ("in_hospital_mortality", "icu_admission"):
        df = _labels(demo, task)
        for split, part in df.groupby("split"):
            st = TokenSplit(demo / "tok" / split)
            for sid, pt, h in zip(part["subject_id"], part["prediction_time"], part["hadm_id"]):
                i = int(st.index_of([sid])[0])
                a, cut, end = probe_span(st, i, pt, 10**6)
                tm, tk = np.asarray(st.times[cut:end]), np.asarray(st.tokens[cut:end])
                assert (tm < to_us(np.datetime64(disch[h], "us"))).all()
                # diagnosis tokens in the probe, if any, all come from earlier admissions
                assert all(t < to_us(np.datetime64(disch[h], "us")) for t, k in zip(tm, tk) if k in dx_ids)


def test_probe_before_any_event_is_prefix_only(synth):
    st = TokenSplit(synth / "tok" / "train")
    x = probe_input(st, 0, int(st.times[STATIC_PREFIX_LEN]), 32)  # exactly at the first event: excluded
    assert len(x) == STATIC_PREFIX_LEN
    with pytest.raises(EhrscaleError, match="context_length"):
        probe_input(st, 0, 0, STATIC_PREFIX_LEN)
    with pytest.raises(EhrscaleError, match="not in this token split"):
        probe_inputs(st, [-5], [0], 32)


# --------------------------------------------------------------------------- declarative tasks


def test_user_defined_task_without_code(tmp_path, synth):
    spec_file = tmp_path / "furosemide.yaml"
    spec_file.write_text(yaml.safe_dump({
        "description": "furosemide given after the first 2 hours",
        "prediction": {"anchor": "ADMISSION//", "offset": "90m"},
        "include": {"in_hospital_at_prediction": True},
        "label": {"rule": "event_in_admission", "code_prefix": "MEDICATION//Furosemide"},
    }))
    out = tmp_path / "out" / "furosemide.parquet"
    assert cli_main(["labels", str(synth / "meds"), "--task", str(spec_file), "--out", str(out)]) == 0
    df = pq.read_table(out).to_pandas().assign(hadm_id=pq.read_table(out.parent / "examples" / out.name)["hadm_id"])
    assert len(df) > 0 and df["boolean_value"].any() and not df["boolean_value"].all()
    events = read_events(synth / "meds", {"MEDICATION//Furosemide"})
    furo = events[events["code"] == "MEDICATION//Furosemide"]
    for h, y, pt in zip(df["hadm_id"], df["boolean_value"], df["prediction_time"]):
        assert y == bool((furo.loc[furo["hadm_id"] == h, "time"] > pt).any())


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"prediction": {"anchor": "ADMISSION//"}, "label": {"rule": "nope"}}, "label.rule"),
        ({"prediction": {"anchor": "ADMISSION//", "offset": "24 hours"}, "label": {"rule": "death_in_admission"}}, "bad duration"),
        ({"prediction": {"anchor": "ADMISSION//"}, "include": {"alive": True}, "label": {"rule": "death_in_admission"}}, "include filter"),
        ({"prediction": {"anchor": "ADMISSION//"}, "label": {"rule": "los_greater_than"}}, "threshold"),
        ({"prediction": {"offset": "1h"}, "label": {"rule": "death_in_admission"}}, "anchor"),
        ({"prediction": {"anchor": "ADMISSION//"}, "label": {"rule": "death_in_admission"}, "extra": 1}, "unknown key"),
    ],
)
def test_bad_task_specs(raw, match):
    with pytest.raises(EhrscaleError, match=match):
        TaskSpec.from_dict(raw, "t.yaml", default_name="t")


def test_labels_errors(tmp_path, capsys):
    assert cli_main(["labels", str(tmp_path / "nope"), str(tmp_path / "L"), "--tasks", str(TASKS / "long_los.yaml")]) == 2
    assert "MEDS directory not found" in capsys.readouterr().err
    meds = write_meds(tmp_path / "meds", [ev(1, None, "GENDER//F"), ev(1, "2110-01-01", "LAB//1//x", 1.0)], {1: "train"})
    with pytest.raises(EhrscaleError, match="empty cohort"):
        compute_labels(load_task(TASKS / "long_los.yaml"), read_events(meds, set()))
    assert cli_main(["labels", str(meds), "--tasks", str(TASKS / "long_los.yaml"), str(TASKS / "icu_admission.yaml"),
                     "--out", str(tmp_path / "x.parquet")]) == 2
    assert "--out takes exactly one task" in capsys.readouterr().err
    assert cli_main(["labels", str(meds), "--tasks", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "task file not found" in capsys.readouterr().err


def test_static_prefix_is_known_at_every_prediction_time(demo):
    """Race/marital come from the first admission, age from the first event: both precede every label."""
    events = read_events(demo / "meds", {"RACE//", "MARITAL_STATUS//"})
    first_adm = events[events["code"].str.startswith(("RACE//", "MARITAL_STATUS//"))].groupby("subject_id")["time"].min()
    for t in DEFAULT_TASKS:
        df = _labels(demo, t)
        for split, part in df.groupby("split"):
            st = TokenSplit(demo / "tok" / split)
            idx = st.index_of(part["subject_id"].to_numpy())
            first_event = np.asarray(st.times)[np.asarray(st.offsets)[idx] + STATIC_PREFIX_LEN]
            pt = to_us(part["prediction_time"].to_numpy())
            assert (first_event < pt).all(), t  # the age token's event is in the past
            fa = to_us(part["subject_id"].map(first_adm).to_numpy().astype("datetime64[us]"))
            assert (fa < pt).all(), t


def test_load_task_inputs(demo):
    from ehrscale.probe.inputs import load_task_inputs

    out = load_task_inputs(demo / "tok", demo / "labels" / "long_los.parquet", "train", 256)
    df = _labels(demo, "long_los")
    assert out["ids"].shape == ((df["split"] == "train").sum(), 256)
    assert out["labels"].sum() == df.loc[df["split"] == "train", "boolean_value"].sum()
    assert (out["lengths"] > STATIC_PREFIX_LEN).all() and (out["lengths"] <= 256).all()


@pytest.mark.parametrize("stage", ["tokenize", "labels"])
def test_unwritable_output_fails_before_the_work(demo, tmp_path, capsys, stage):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    args = {"tokenize": ["tokenize", str(demo / "meds"), str(out)],
            "labels": ["labels", str(demo / "meds"), str(out), "--tasks", str(TASKS)]}[stage]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot write output {out}" in err and "is a file, not a directory" in err
    assert "vocabulary:" not in err  # tokenize stopped before fitting the vocabulary
