"""No lookahead, checked against each event's TRUE time in the raw data.

Comparing token times with prediction times cannot catch an event that extraction placed
at the wrong time. Here every raw procedure row has its own code and a known true time
(when it was done), and the whole chain runs: raw CSVs -> extract -> tokenize -> labels ->
probe inputs. For every label of every configured task, each procedure whose tokens reach
the probe input must truly have happened before the prediction time.

The rows mimic what MIMIC-IV contains: a procedure billed to one admission but dated
during the next one (the leak that clipping to the earlier discharge opened), a procedure
on the discharge day, and one dated the day before its admission.
"""

from __future__ import annotations

import pandas as pd
import pytest

from ehrscale.extract.raw import extract
from ehrscale.extract.settings import ExtractSettings
from ehrscale.labels.compute import compute_labels, read_events
from ehrscale.labels.tasks import load_task
from ehrscale.tokens.encode import TokenizeSettings, tokenize
from ehrscale.tokens.store import TokenSplit, probe_input
from ehrscale.tokens.vocab import Vocab
from support import ROOT
from support.raw import write_raw

TASKS = sorted((ROOT / "config" / "tasks").glob("*.yaml"))

# (subject, hadm, chartdate, ICD-10-PCS code, true time). Codes differ in characters 2-4,
# which become their own token (ICD10PCS//<2-4>), so each token names its raw row.
PROCEDURES = [
    (1, 101, "2150-01-03", "0AAA0ZZ", "2150-01-03 14:00"),  # during A
    (1, 101, "2150-01-05", "0BBB0ZZ", "2150-01-05 07:00"),  # A's discharge day, before discharge
    (1, 101, "2150-01-09", "0CCC0ZZ", "2150-01-09 15:00"),  # billed to A, done during B
    (1, 102, "2150-01-10", "0DDD0ZZ", "2150-01-10 11:00"),  # during B
    (2, 201, "2150-01-31", "0EEE0ZZ", "2150-01-31 21:00"),  # the evening before admission C
    (2, 201, "2150-02-01", "0FFF0ZZ", "2150-02-01 22:00"),  # C's admission day
]
ADMISSIONS = [  # subject, hadm, admittime, dischtime
    (1, 101, "2150-01-01 08:00:00", "2150-01-05 10:00:00"),
    (1, 102, "2150-01-08 09:00:00", "2150-01-12 12:00:00"),
    (2, 201, "2150-02-01 20:00:00", "2150-02-04 11:00:00"),
]


def raw_rows() -> dict[str, list[dict]]:
    return {
        "patients": [{"subject_id": s, "gender": g, "anchor_age": 60, "anchor_year": 2150} for s, g in ((1, "F"), (2, "M"))],
        "admissions": [{"subject_id": s, "hadm_id": h, "admittime": a, "dischtime": d, "admission_type": "EW EMER.",
                        "discharge_location": "HOME"} for s, h, a, d in ADMISSIONS],
        "procedures_icd": [{"subject_id": s, "hadm_id": h, "seq_num": i, "chartdate": day, "icd_code": code,
                            "icd_version": 10} for i, (s, h, day, code, _) in enumerate(PROCEDURES, 1)],
        "diagnoses_icd": [{"subject_id": s, "hadm_id": h, "seq_num": 1, "icd_code": "I509", "icd_version": 10}
                          for s, h, _, _ in ADMISSIONS],
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("lookahead")
    write_raw(root / "raw", raw_rows())
    settings = ExtractSettings(split_fractions={"train": 1.0, "tuning": 0.0, "held_out": 0.0})
    summary = extract(root / "raw", root / "meds", settings)
    tokenize(root / "meds", root / "tokens", TokenizeSettings(min_count=1))
    return root, summary


def test_procedures_never_reach_an_input_before_they_happened(chain):
    root, _ = chain
    true_time = {f"ICD10PCS//{code[1:4]}": pd.Timestamp(t) for _, _, _, code, t in PROCEDURES}
    vocab = Vocab.load(root / "tokens" / "vocab.json")
    tokens = TokenSplit(root / "tokens" / "train")
    events = read_events(root / "meds", {"ICU_ADMISSION//"})
    checked, seen, leaks = 0, set(), []
    for task in TASKS:
        labels = compute_labels(load_task(task), events)
        assert len(labels), f"{task.stem}: no labels in the fixture"
        for row in labels.itertuples():
            ids = probe_input(tokens, int(tokens.index_of([row.subject_id])[0]), row.prediction_time, 256)
            for name in (vocab.tokens[i] for i in ids):
                if name in true_time:
                    seen.add(name)
                    if true_time[name] >= row.prediction_time:
                        leaks.append(f"{task.stem}: {name} (done {true_time[name]}) is in the input of the "
                                     f"prediction at {row.prediction_time} for subject {row.subject_id}")
            checked += 1
    assert not leaks, "\n".join(leaks)
    assert checked >= 8
    assert {"ICD10PCS//AAA", "ICD10PCS//BBB", "ICD10PCS//EEE"} <= seen  # the check saw real procedures


def test_procedure_times_follow_the_documented_rule(chain):
    root, summary = chain
    meds = pd.concat(pd.read_parquet(f) for f in sorted((root / "meds" / "data").glob("*/*.parquet")))
    placed = meds[meds.code.str.startswith("ICD10PCS//")].set_index("code")["time"]
    assert placed["ICD10PCS//0AAA0ZZ"] == pd.Timestamp("2150-01-03 23:59:59")  # end of its day
    assert placed["ICD10PCS//0BBB0ZZ"] == pd.Timestamp("2150-01-05 10:00:00")  # its day, at the discharge
    assert placed["ICD10PCS//0CCC0ZZ"] == pd.Timestamp("2150-01-09 23:59:59")  # its own day, not A's discharge
    assert placed["ICD10PCS//0EEE0ZZ"] == pd.Timestamp("2150-02-01 20:00:00")  # later: the admission
    assert placed["ICD10PCS//0FFF0ZZ"] == pd.Timestamp("2150-02-01 23:59:59")
    for _, _, day, code, _ in PROCEDURES:  # never earlier than its date
        assert placed[f"ICD10PCS//{code}"] >= pd.Timestamp(day)
    assert summary["tables"]["procedures_icd"]["dated_after_discharge"] == 1
