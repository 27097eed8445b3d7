"""``--density mimic``: MIMIC-IV's event rates on top of the default cohort, and parallel generation."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ehrscale.core.errors import EhrscaleError
from ehrscale.extract.raw import extract
from ehrscale.synth import density, generate
from ehrscale.synth.writer import LAYOUT
from support.raw import gz_lines, synth_path

N = 600
ADDED = {"labevents", "chartevents", "d_items"}  # the only tables a dense cohort adds rows to


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("density")
    generate(root / "default", N, seed=5, chunk_size=200)
    generate(root / "mimic", N, seed=5, chunk_size=200, density="mimic", workers=2)
    return root / "default", root / "mimic"


@pytest.fixture(scope="module")
def con(cohorts):
    _, dense = cohorts
    c = duckdb.connect()
    for table in ("admissions", "icustays", "patients", "labevents", "chartevents"):
        types = "{'value': 'VARCHAR', 'hadm_id': 'BIGINT'}" if table.endswith("events") else "{}"
        c.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv('{synth_path(dense, table)}', header=true, "
                  f"types={types})")
    return c


def test_a_dense_cohort_is_the_default_one_plus_rows(cohorts):
    default, dense = cohorts
    for table in LAYOUT:
        if table not in ADDED:
            assert synth_path(default, table).read_bytes() == synth_path(dense, table).read_bytes(), table
            continue
        base, more = gz_lines(synth_path(default, table)), gz_lines(synth_path(dense, table))
        assert base[0] == more[0], f"{table} header"
        missing = set(base) - set(more)
        assert not missing, f"{table}: {len(missing)} default rows missing from the dense cohort"
        assert len(more) > len(base), table


def test_rates_match_the_documented_targets(con):
    icu_days = con.execute("SELECT sum(los) FROM icustays").fetchone()[0]
    stay_days = con.execute("SELECT sum(epoch(dischtime - admittime)) / 86400 FROM admissions").fetchone()[0]
    icu_labs = con.execute("SELECT count(*) FROM labevents l JOIN icustays s USING (hadm_id) "
                           "WHERE l.charttime BETWEEN s.intime AND s.outtime").fetchone()[0]
    inpatient, outpatient = con.execute("SELECT count(hadm_id), count(*) - count(hadm_id) FROM labevents").fetchone()
    charts = con.execute("SELECT count(*) FROM chartevents").fetchone()[0]
    rates = {"ward": (inpatient - icu_labs) / (stay_days - icu_days), "icu": icu_labs / icu_days,
             "outpatient": outpatient / N, "chart": charts / icu_days}
    print("dense rates:", {k: round(v, 1) for k, v in rates.items()})
    assert rates["ward"] == pytest.approx(density.WARD_LABS_PER_DAY, rel=0.12)
    assert rates["icu"] == pytest.approx(density.ICU_LABS_PER_DAY, rel=0.12)
    assert rates["outpatient"] == pytest.approx(density.OUTPATIENT_LABS_PER_PATIENT, rel=0.08)
    assert rates["chart"] == pytest.approx(density.CHART_ROWS_PER_ICU_DAY, rel=0.05)


def test_extra_rows_stay_inside_their_stay_and_life(con):
    after_discharge = con.execute("SELECT count(*) FROM labevents l JOIN admissions a USING (hadm_id) "
                                  "WHERE l.charttime > a.dischtime").fetchone()[0]
    outside_icu = con.execute("SELECT count(*) FROM chartevents c JOIN icustays s USING (stay_id) "
                              "WHERE c.charttime < s.intime OR c.charttime > s.outtime").fetchone()[0]
    after_death = con.execute("SELECT count(*) FROM labevents l JOIN patients p USING (subject_id) "
                              "WHERE p.dod IS NOT NULL AND l.charttime::DATE > p.dod").fetchone()[0]
    dup_ids = con.execute("SELECT count(*) - count(DISTINCT labevent_id) FROM labevents").fetchone()[0]
    assert (after_discharge, outside_icu, after_death, dup_ids) == (0, 0, 0, 0)
    text = con.execute("SELECT count(*) FROM chartevents WHERE valuenum IS NULL AND value IS NOT NULL").fetchone()[0]
    assert text > 0  # nursing assessments are text, as in MIMIC-IV


def test_extract_reads_a_dense_cohort(cohorts, tmp_path):
    _, dense = cohorts
    extract(dense, tmp_path / "meds", name="dense")
    events = pd.concat([pd.read_parquet(f) for f in (tmp_path / "meds" / "data").glob("*/*.parquet")])
    charts = events[events.code.str.startswith("CHART//")]
    assert charts.code.str.contains("//220739//").any()  # a text item arrives as a code with its text value
    assert charts.text_value.notna().any() and charts.numeric_value.notna().any()
    n_rows = sum(len(gz_lines(synth_path(dense, t))) - 1 for t in ("labevents", "chartevents"))
    assert len(events[events.code.str.startswith(("LAB//", "CHART//"))]) == n_rows


def test_workers_do_not_change_a_byte(tmp_path):
    generate(tmp_path / "one", 300, seed=2, chunk_size=50)
    generate(tmp_path / "two", 300, seed=2, chunk_size=50, workers=2)
    for table in LAYOUT:
        assert synth_path(tmp_path / "one", table).read_bytes() == synth_path(tmp_path / "two", table).read_bytes(), table


def test_a_dense_cohort_is_in_patient_order_whatever_the_chunking(cohorts, tmp_path):
    _, dense = cohorts
    generate(tmp_path / "one_chunk", N, seed=5, chunk_size=N, density="mimic")
    for table in LAYOUT:
        assert synth_path(dense, table).read_bytes() == synth_path(tmp_path / "one_chunk", table).read_bytes(), table


@pytest.mark.parametrize("kwargs", [{"density": "dense"}, {"workers": 0}])
def test_bad_density_or_workers_raise(tmp_path, kwargs):
    with pytest.raises(EhrscaleError, match="density|workers"):
        generate(tmp_path / "x", 10, **kwargs)
