"""Extraction of the real MIMIC-IV demo into MEDS, table by table, and every bad input."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.settings import load_settings
from ehrscale.extract.raw import extract
from ehrscale.extract.settings import ExtractSettings
from support import DEMO


def raw(table: str, module: str = "hosp") -> pd.DataFrame:
    return pd.read_csv(DEMO / module / f"{table}.csv.gz", dtype=str, keep_default_na=False).replace("", np.nan)


@pytest.fixture(scope="module")
def demo_meds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "meds"
    extract(DEMO, out, name="demo")
    return out


@pytest.fixture(scope="module")
def events(demo_meds) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted((demo_meds / "data").glob("*/*.parquet"))], ignore_index=True)


def count_prefix(events: pd.DataFrame, *prefixes: str) -> int:
    return int(events.code.str.startswith(prefixes).sum())


def test_every_source_row_becomes_its_events(events):
    admissions, patients = raw("admissions"), raw("patients")
    hadm = set(admissions.hadm_id)
    diagnoses = raw("diagnoses_icd")
    assert count_prefix(events, "ICD9CM//", "ICD10CM//") == diagnoses.hadm_id.isin(hadm).sum() == len(diagnoses)
    assert count_prefix(events, "ICD9PCS//", "ICD10PCS//") == len(raw("procedures_icd"))
    assert count_prefix(events, "LAB//") == raw("labevents").charttime.notna().sum()
    rx = raw("prescriptions")
    assert count_prefix(events, "MEDICATION//") == (rx.starttime.notna() & rx.drug.notna()).sum()
    assert count_prefix(events, "ADMISSION//") == count_prefix(events, "DISCHARGE//") == len(admissions)
    assert count_prefix(events, "RACE//") == admissions.race.notna().sum()
    assert count_prefix(events, "ICU_ADMISSION//") == len(raw("icustays", "icu"))
    assert count_prefix(events, "GENDER//") == count_prefix(events, "MEDS_BIRTH") == len(patients)
    assert count_prefix(events, "TRANSFER//") == (raw("transfers").eventtype != "discharge").sum()
    assert count_prefix(events, "SERVICE//") == len(raw("services"))
    assert count_prefix(events, "DRG//") == len(raw("drgcodes"))
    omr = raw("omr")
    is_bp = omr.result_name.str.startswith("Blood Pressure")
    assert count_prefix(events, "OMR//") == len(omr) + is_bp.sum()
    hospital_deaths = admissions[admissions.deathtime.notna()]
    outside = patients.dod.notna() & ~patients.subject_id.isin(hospital_deaths.subject_id)
    assert (events.code == "MEDS_DEATH").sum() == len(hospital_deaths) + outside.sum()


def test_diagnoses_sit_at_discharge_and_procedures_inside_admission(events):
    admissions = raw("admissions")
    admissions["hadm_id"] = admissions.hadm_id.astype("int64")
    times = admissions.set_index("hadm_id")[["admittime", "dischtime"]].apply(pd.to_datetime)
    dx = events[events.code.str.startswith(("ICD9CM//", "ICD10CM//"))]
    assert (dx.time.to_numpy() == times.loc[dx.hadm_id.astype("int64"), "dischtime"].to_numpy()).all()
    # Procedures: the end of their day, or the discharge on the discharge day, or the admittime
    # if dated before it; never before their date, never clipped back to an earlier discharge.
    px = raw("procedures_icd")
    adm = times.loc[px.hadm_id.astype("int64")].reset_index(drop=True)
    day = pd.to_datetime(px.chartdate).reset_index(drop=True)
    on_discharge_day = day == adm.dischtime.dt.normalize()
    expected = day + pd.Timedelta("23:59:59")
    expected[on_discharge_day] = adm.dischtime[on_discharge_day]
    expected = expected.combine(adm.admittime, max)
    got = events.loc[events.code.str.startswith(("ICD9PCS//", "ICD10PCS//")), "time"]
    assert sorted(got) == sorted(expected)
    assert (expected >= day).all()
    assert (day > adm.dischtime.dt.normalize()).any(), "the demo has procedures dated after their discharge"


def test_lab_values_sit_at_their_result_time(events):
    labs = raw("labevents")
    labs = labs[labs.charttime.notna()]
    expected = pd.to_datetime(labs.storetime.fillna(labs.charttime)).combine(pd.to_datetime(labs.charttime), max)
    got = events.loc[events.code.str.startswith("LAB//"), "time"]
    assert sorted(got) == sorted(expected)
    assert (pd.to_datetime(labs.storetime) > pd.to_datetime(labs.charttime)).any()  # the rule matters here


def test_codes_are_namespaced_and_readable(events):
    assert "ICD10CM//I509" in set(events.code) or events.code.str.match(r"^ICD10CM//[A-Z]\d").any()
    assert events.code.str.match(r"^LAB//\d+//.+").sum() == count_prefix(events, "LAB//")
    namespaces = set(events.code.str.split("//").str[0])
    assert {"MEDS_BIRTH", "MEDS_DEATH", "GENDER", "ADMISSION", "DISCHARGE", "ICD9CM", "ICD10CM", "LAB"} <= namespaces


def test_meds_layout_schema_and_order(demo_meds):
    files = sorted((demo_meds / "data").glob("*/*.parquet"))
    assert {f.parent.name for f in files} == {"train", "tuning", "held_out"}
    seen: dict[int, Path] = {}
    for f in files:
        table = pq.read_table(f)
        core = table.select(["subject_id", "time", "code", "numeric_value", "text_value"])
        meds.DataSchema.validate(core)
        assert table.schema.field("time").type == meds.DataSchema.schema().field("time").type
        df = table.to_pandas()
        assert df.subject_id.is_monotonic_increasing
        # Within a subject, static (null-time) events first, then non-decreasing time.
        for _, g in df.groupby("subject_id", sort=False):
            t = g.time.to_numpy()
            n_static = int(np.isnat(t).sum())
            assert np.isnat(t[:n_static]).all() and not np.isnat(t[n_static:]).any()
            assert (np.diff(t[n_static:].astype("int64")) >= 0).all()
        for sid in df.subject_id.unique():
            assert sid not in seen, f"subject {sid} split across {seen.get(sid)} and {f}"
            seen[int(sid)] = f
    splits = pd.read_parquet(demo_meds / "metadata" / "subject_splits.parquet")
    meds.SubjectSplitSchema.validate(pq.read_table(demo_meds / "metadata" / "subject_splits.parquet"))
    assert set(splits.subject_id) == set(raw("patients").subject_id.astype(int))
    assert not splits.subject_id.duplicated().any()
    for sid, f in seen.items():
        assert splits.set_index("subject_id").loc[sid, "split"] == f.parent.name


def test_metadata_codes_and_dataset(demo_meds, events):
    codes = pq.read_table(demo_meds / "metadata" / "codes.parquet")
    meds.CodeMetadataSchema.validate(codes)
    codes = codes.to_pandas().set_index("code")
    assert set(codes.index) == set(events.code)
    assert codes.loc["ICD10CM//I509", "description"].startswith("Heart failure") if "ICD10CM//I509" in codes.index else True
    labs = codes[codes.index.str.startswith("LAB//50912//")]
    assert len(labs) and labs.description.str.contains("Creatinine").all()
    assert list(codes.loc[codes.index[codes.index.str.startswith("ICD10CM//")][0], "parent_codes"])[0].startswith("ICD10CM//")
    import json

    dataset = json.loads((demo_meds / "metadata" / "dataset.json").read_text())
    meds.DatasetMetadataSchema.validate(dataset)
    assert dataset["dataset_name"] == "demo"


def test_extraction_is_deterministic(demo_meds, tmp_path):
    again = tmp_path / "again"
    extract(DEMO, again, name="demo")
    for f in sorted((demo_meds / "data").glob("*/*.parquet")):
        assert pq.read_table(f).equals(pq.read_table(again / f.relative_to(demo_meds)))


# ---------------------------------------------------------------- bad input

@pytest.fixture
def raw_copy(tmp_path) -> Path:
    dst = tmp_path / "raw"
    shutil.copytree(DEMO, dst)
    return dst


def rewrite(path: Path, transform) -> None:
    """Apply ``transform`` to [header, row 1, row 2, rest]; the rest stays intact (it has quoted newlines)."""
    with gzip.open(path, "rt") as fh:
        parts = fh.read().rstrip("\n").split("\n", 3)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(transform(parts)) + "\n")


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary output left behind"


def test_missing_required_table_names_table_and_dir(raw_copy, tmp_path):
    (raw_copy / "hosp" / "labevents.csv.gz").unlink()
    out = tmp_path / "out"
    with pytest.raises(EhrscaleError, match=r"required table 'labevents'.*hosp"):
        extract(raw_copy, out)
    assert_no_output(out)


def test_missing_optional_table_warns_and_skips(raw_copy, tmp_path, caplog):
    (raw_copy / "hosp" / "omr.csv.gz").unlink()
    result = extract(raw_copy, tmp_path / "out")
    assert "omr" not in result["tables"]
    assert any("optional table 'omr'" in r.message for r in caplog.records)


def test_uncompressed_csv_is_read(raw_copy, tmp_path):
    gz = raw_copy / "hosp" / "services.csv.gz"
    (raw_copy / "hosp" / "services.csv").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert extract(raw_copy, tmp_path / "out")["tables"]["services"]["events"] == len(raw("services"))


def test_missing_column_names_file_and_column(raw_copy, tmp_path):
    path = raw_copy / "hosp" / "admissions.csv.gz"
    rewrite(path, lambda lines: [lines[0].replace("dischtime", "discharge_time")] + lines[1:])
    out = tmp_path / "out"
    with pytest.raises(EhrscaleError, match=r"admissions\.csv\.gz: missing column\(s\) dischtime"):
        extract(raw_copy, out)
    assert_no_output(out)


def test_unparsable_rows_are_counted_and_fail(raw_copy, tmp_path):
    path = raw_copy / "hosp" / "labevents.csv.gz"
    bad_time = lambda line: ",".join(v if i != 6 else "not-a-time" for i, v in enumerate(line.split(",")))
    rewrite(path, lambda lines: [lines[0], bad_time(lines[1]), bad_time(lines[2]), *lines[3:], "1,2,3"])
    out = tmp_path / "out"
    with pytest.raises(EhrscaleError, match=r"labevents\.csv\.gz: 3 of \d+ row\(s\) unparsable.*charttime.*2 row.*1 malformed"):
        extract(raw_copy, out)
    assert_no_output(out)
    # Within a configured tolerance the rows are dropped, and the rest extracted.
    result = extract(raw_copy, out, ExtractSettings(max_unparsable_fraction=0.01))
    assert result["tables"]["labevents"]["unparsable_rows"] == 3
    assert result["tables"]["labevents"]["events"] == len(raw("labevents")) - 2


def test_empty_cohort_fails(raw_copy, tmp_path):
    rewrite(raw_copy / "hosp" / "patients.csv.gz", lambda lines: lines[:1])
    out = tmp_path / "out"
    with pytest.raises(EhrscaleError, match="empty cohort"):
        extract(raw_copy, out)
    assert_no_output(out)


def test_failure_leaves_previous_output_intact(raw_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker").write_text("previous run")
    (raw_copy / "hosp" / "patients.csv.gz").unlink()
    with pytest.raises(EhrscaleError):
        extract(raw_copy, out)
    assert (out / "marker").read_text() == "previous run"


@pytest.mark.parametrize(
    "settings, match",
    [
        ('{"split_fraction": {}}', r"extract\.split_fraction"),
        ('{"tables": {"labevent": "required"}}', r"unknown table"),
        ('{"tables": {"omr": "sometimes"}}', r"extract\.tables\.omr"),
        ('{"tables": {"patients": "optional"}}', r"extract\.tables\.patients"),
        ('{"split_fractions": {"train": 0.9, "tuning": 0.2, "held_out": 0.1}}', r"sum to 1"),
        ('{"max_inconsistent_fraction": 1.5}', r"extract\.max_inconsistent_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_settings_name_the_key(settings, match, tmp_path):
    with pytest.raises(EhrscaleError, match=match):
        extract(DEMO, tmp_path / "out", load_settings(ExtractSettings, settings, "extract"))


# ------------------------------------------------- corrupt and contradictory input (issue 13)

def _corrupt(raw_dir: Path, table: str, transform) -> None:
    """Replace ``hosp/<table>.csv.gz`` with ``transform(decompressed bytes)``, gzipped (or raw bytes if it says so)."""
    path = raw_dir / "hosp" / f"{table}.csv.gz"
    data = transform(gzip.decompress(path.read_bytes()))
    path.write_bytes(data if data[:2] == b"\x1f\x8b" else gzip.compress(data, mtime=0))


def _truncate_gzip(_: bytes) -> bytes:
    whole = (DEMO / "hosp" / "admissions.csv.gz").read_bytes()
    return whole[: len(whole) // 2]


def _mixed_line_endings(data: bytes) -> bytes:
    lines = data.split(b"\n")
    return b"\n".join(line + b"\r" if i % 3 == 1 and line else line for i, line in enumerate(lines))


def _duplicate_first_row(data: bytes) -> bytes:
    header, first, rest = data.split(b"\n", 2)
    return b"\n".join([header, first, first, rest])


def _conflicting_patient(data: bytes) -> bytes:
    header, first, rest = data.split(b"\n", 2)
    cols = first.split(b",")
    cols[1] = b"M" if cols[1] == b"F" else b"F"
    return b"\n".join([header, first, b",".join(cols), rest])


DEATH_SUBJECT = 10014729  # admitted in 2125, alive in the data


def _early_dod(data: bytes) -> bytes:
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(str(DEATH_SUBJECT).encode() + b","):
            lines[i] = line.rsplit(b",", 1)[0] + b",2100-01-01"
    return b"\n".join(lines)


# (name, table, transform, message the user reads)
BAD_INPUTS = [
    ("truncated gzip", "admissions", _truncate_gzip,
     r"admissions\.csv\.gz: not a readable CSV file: the gzip stream is truncated or corrupt after line \d+"),
    ("binary garbage appended", "admissions", lambda d: d + bytes(range(256)) * 8,
     r"admissions\.csv\.gz: not a readable CSV file: line 277: binary data"),
    ("CRLF rows mixed into an LF file", "admissions", _mixed_line_endings,
     r"admissions\.csv\.gz: not a readable CSV file: mixed line endings: line 1 ends in LF, line 2 in CRLF"),
    ("exact duplicate patients row", "patients", _duplicate_first_row,
     r"patients\.csv\.gz: 1 exact duplicate row\(s\); above extract\.max_inconsistent_fraction=0\.0"),
    ("exact duplicate admissions row", "admissions", _duplicate_first_row,
     r"admissions\.csv\.gz: 1 exact duplicate row\(s\); above extract\.max_inconsistent_fraction=0\.0"),
    ("two conflicting rows for one patient", "patients", _conflicting_patient,
     r"patients\.csv\.gz: 1 subject_id\(s\) with conflicting rows \(2 rows; first: subject_id 10014729 has 2 rows "
     r"that differ in gender\)"),
    ("dod before the patient's admissions", "patients", _early_dod,
     r"patients\.csv\.gz: 1 subject\(s\) with a dod before their last admission \(first: subject_id 10014729, "
     r"dod 2100-01-01"),
]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ehrscale", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name, table, transform, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gives_a_clear_error_and_no_output(raw_copy, tmp_path, name, table, transform, message):
    _corrupt(raw_copy, table, transform)
    out = tmp_path / "out"
    done = _run_cli("extract", str(raw_copy), str(out), "--threads", "1")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert re.search(message, done.stderr), done.stderr[-2000:]
    assert_no_output(out)


@pytest.mark.parametrize("where", ["parent is a file", "read-only"])
def test_unwritable_output_fails_before_any_work(tmp_path, where):
    if where == "parent is a file":
        (tmp_path / "file").write_text("")
        out, message = tmp_path / "file" / "meds", r"cannot write output .*file/meds: .*file is a file, not a directory"
    elif os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o555)
        out, message = tmp_path / "ro" / "meds", r"cannot write output .*ro/meds: Permission denied"
    else:  # root writes through permission bits; /proc refuses new files to everyone
        out, message = Path("/proc/self/ehrscale-meds"), r"cannot write output /proc/self/ehrscale-meds: "
    done = _run_cli("extract", str(DEMO), str(out), "--threads", "1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert "ehrscale.extract.raw: labevents" not in done.stderr, "a table was loaded before the output was checked"
    assert not out.exists()


def _meds_events(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted((out / "data").glob("*/*.parquet"))], ignore_index=True)


TOLERANT = ExtractSettings(max_inconsistent_fraction=0.05)


def test_duplicate_rows_are_dropped_and_counted_within_tolerance(raw_copy, tmp_path, events):
    _corrupt(raw_copy, "patients", _duplicate_first_row)
    _corrupt(raw_copy, "admissions", _duplicate_first_row)
    result = extract(raw_copy, tmp_path / "out", TOLERANT)
    assert result["tables"]["patients"]["duplicate_rows"] == 1
    assert result["tables"]["admissions"]["duplicate_rows"] == 1
    summary = json.loads((tmp_path / "out/metadata/extract_summary.json").read_text())
    assert summary["tables"]["patients"]["duplicate_rows"] == summary["tables"]["admissions"]["duplicate_rows"] == 1
    got = _meds_events(tmp_path / "out")
    assert len(got) == len(events)  # nothing doubled
    assert got.code.value_counts().equals(events.code.value_counts())


def test_conflicting_patient_is_dropped_whole_within_tolerance(raw_copy, tmp_path, events):
    _corrupt(raw_copy, "patients", _conflicting_patient)
    result = extract(raw_copy, tmp_path / "out", TOLERANT)
    assert result["tables"]["patients"]["conflicting_subject_ids"] == 1
    got = _meds_events(tmp_path / "out")
    assert 10014729 not in set(got.subject_id)  # no second GENDER, no second MEDS_BIRTH: no subject at all
    assert got.groupby("subject_id").code.apply(lambda c: (c == "MEDS_BIRTH").sum()).eq(1).all()
    assert len(got) == (events.subject_id != 10014729).sum()


def test_dod_before_admission_is_dropped_within_tolerance(raw_copy, tmp_path, events):
    _corrupt(raw_copy, "patients", _early_dod)
    result = extract(raw_copy, tmp_path / "out", TOLERANT)
    assert result["tables"]["patients"]["dod_before_admission"] == 1
    got = _meds_events(tmp_path / "out")
    mine = got[got.subject_id == DEATH_SUBJECT]
    assert (mine.code == "MEDS_DEATH").sum() == 0  # the bad dod is gone, not placed before the admissions
    before = events[events.subject_id == DEATH_SUBJECT]
    assert (before.code == "MEDS_DEATH").sum() == 0 and len(mine) == len(before)
