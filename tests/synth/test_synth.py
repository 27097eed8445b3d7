"""Synthetic MIMIC-IV generator: layout, realism, determinism/growth, integrity, bad input."""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import duckdb
import pytest

from ehrscale.core.errors import EhrscaleError
from ehrscale.synth import generate
from ehrscale.synth.writer import LAYOUT
from support import DEMO
from support.raw import gz_lines, synth_path

N_BIG = 10_000


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    summary = generate(out, N_BIG, seed=0)
    return out, summary


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_small") / "c200"
    generate(out, 200, seed=7)
    return out


INT_COLS = {"subject_id", "hadm_id", "stay_id", "transfer_id", "labevent_id", "specimen_id", "itemid", "seq_num",
            "icd_version", "anchor_age", "anchor_year", "hospital_expire_flag", "pharmacy_id", "poe_seq",
            "caregiver_id", "warning", "drg_severity", "drg_mortality"}


@pytest.fixture(scope="module")
def con(big):
    """The 10k cohort loaded once into DuckDB with strict types: a bad timestamp/date/int fails here."""
    root, _ = big
    c = duckdb.connect()
    for table, (module, header, ts, dates) in LAYOUT.items():
        types = {col: "TIMESTAMP" if col in ts else "DATE" if col in dates else "BIGINT" if col in INT_COLS
                 else "DOUBLE" if col in ("valuenum", "los") else "VARCHAR" for col in header}
        cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in types.items()) + "}"
        c.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv('{root}/{module}/{table}.csv.gz', header=true, "
                  f"columns={cols}, timestampformat='%Y-%m-%d %H:%M:%S', dateformat='%Y-%m-%d', auto_detect=false)")
    return c


def test_writes_every_table_with_demo_headers(small):
    for table, (module, header, _, _) in LAYOUT.items():
        path = synth_path(small, table)
        assert path.exists(), table
        with gzip.open(path, "rt") as f:
            assert f.readline().rstrip("\n") == ",".join(header), table
        demo = DEMO / module / f"{table}.csv.gz"
        if demo.exists():
            with gzip.open(demo, "rt") as f:
                assert f.readline().rstrip("\n") == ",".join(header), f"{table} header differs from the demo"
    # chartevents is not in the demo: MIMIC-IV v2.2's header
    assert LAYOUT["chartevents"][1] == ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime",
                                        "itemid", "value", "valuenum", "valueuom", "warning"]


def test_realism_rates(big, con):
    _, summary = big
    n_adm, deaths, long_los, icu_adm = con.execute("""
        SELECT count(*), sum(hospital_expire_flag),
               sum(CASE WHEN dischtime - admittime > INTERVAL 7 DAY THEN 1 END),
               count(*) FILTER (WHERE hadm_id IN (SELECT hadm_id FROM icustays))
        FROM admissions""").fetchone()
    alive, readmit = con.execute("""
        WITH a AS (SELECT subject_id, admittime AS adm, dischtime AS dis,
                          hospital_expire_flag AS died,
                          lead(admittime) OVER (PARTITION BY subject_id ORDER BY admittime) AS nxt
                   FROM admissions)
        SELECT count(*), count(*) FILTER (WHERE nxt - dis <= INTERVAL 30 DAY) FROM a WHERE died = 0""").fetchone()
    n_pat_adm = con.execute("SELECT count(DISTINCT subject_id) FROM admissions").fetchone()[0]
    n_labs = con.execute("SELECT count(*) FROM labevents").fetchone()[0]
    rates = {"mortality": deaths / n_adm, "readmission_30d": readmit / alive, "long_los": long_los / n_adm,
             "icu": icu_adm / n_adm, "adm_per_patient": n_adm / n_pat_adm, "labs_per_adm": n_labs / n_adm}
    print("realism at 10k:", {k: round(v, 3) for k, v in rates.items()})
    assert 0.02 <= rates["mortality"] <= 0.10
    assert 0.10 <= rates["readmission_30d"] <= 0.25
    assert 0.15 <= rates["long_los"] <= 0.35
    assert 0.10 <= rates["icu"] <= 0.35
    assert 1.5 <= rates["adm_per_patient"] <= 3.5
    assert 30 <= rates["labs_per_adm"] <= 1000
    # the generator's own summary agrees with the CSVs
    assert summary["admissions"] == n_adm
    assert summary["in_hospital_mortality"] == pytest.approx(rates["mortality"])
    assert summary["readmission_30d"] == pytest.approx(rates["readmission_30d"])
    assert summary["rows"]["labevents"] == n_labs


def test_same_seed_is_byte_identical_and_growth_keeps_earlier_patients(small, tmp_path):
    again = tmp_path / "again"
    generate(again, 200, seed=7, chunk_size=64)  # other chunking: identical content
    grown = tmp_path / "grown"
    generate(grown, 300, seed=7)
    for table, (module, header, _, _) in LAYOUT.items():
        a, b = synth_path(small, table), synth_path(again, table)
        assert gz_lines(a) == gz_lines(b), f"{table} differs with another chunk size"
        if table.startswith("d_"):
            assert set(gz_lines(a)) <= set(gz_lines(synth_path(grown, table))), table
            continue
        col = header.index("subject_id")
        grown_first = [ln for ln in gz_lines(synth_path(grown, table))[1:] if int(ln.split(",")[col]) < 10_000_200]
        assert gz_lines(a)[1:] == grown_first, f"{table}: first 200 patients changed when the cohort grew"
        assert len(gz_lines(synth_path(grown, table))) > len(gz_lines(a)) or table in ("icustays", "chartevents")
    same = tmp_path / "same"
    generate(same, 200, seed=7)
    for table in LAYOUT:
        assert synth_path(small, table).read_bytes() == synth_path(same, table).read_bytes(), table
    other = tmp_path / "other"
    generate(other, 200, seed=8)
    assert gz_lines(synth_path(small, "admissions")) != gz_lines(synth_path(other, "admissions"))


def test_value_formats_parse(con, small):
    # Loading into `con` already parsed every timestamp/date/int strictly; also check the raw text.
    ts = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
    date = re.compile(r"\d{4}-\d{2}-\d{2}")
    for table, (_, header, ts_cols, date_cols) in LAYOUT.items():
        rows = list(csv.reader(gz_lines(synth_path(small, table))))[1:]
        assert rows, table
        for col in ts_cols | date_cols:
            k = header.index(col)
            pattern = ts if col in ts_cols else date
            assert all(pattern.fullmatch(r[k]) for r in rows if r[k] != ""), f"{table}.{col}"
        assert all(len(r) == len(header) for r in rows), table
    years = con.execute("SELECT min(year(admittime)), max(year(admittime)) "
                        "FROM admissions").fetchone()
    assert 2100 <= years[0] and years[1] <= 2220
    assert con.execute("SELECT count(*) FROM diagnoses_icd WHERE icd_code LIKE '%.%' OR icd_version NOT IN (9, 10)"
                       ).fetchone()[0] == 0
    versions = dict(con.execute("SELECT icd_version, count(*) FROM diagnoses_icd GROUP BY 1").fetchall())
    assert versions.get(9, 0) > 0 and versions.get(10, 0) > 0
    # every code and item is described by the dictionaries
    for child, dic, keys in [("diagnoses_icd", "d_icd_diagnoses", "icd_code, icd_version"),
                             ("procedures_icd", "d_icd_procedures", "icd_code, icd_version"),
                             ("labevents", "d_labitems", "itemid"), ("chartevents", "d_items", "itemid")]:
        missing = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {child} EXCEPT "
                              f"SELECT {keys} FROM {dic})").fetchone()[0]
        assert missing == 0, child
        unused = con.execute(f"SELECT count(*) FROM (SELECT {keys} FROM {dic} EXCEPT "
                             f"SELECT DISTINCT {keys} FROM {child})").fetchone()[0]
        assert unused == 0 or dic == "d_labitems", f"{dic} lists unused codes"


def test_keys_and_referential_integrity(con):
    for table, key in [("patients", "subject_id"), ("admissions", "hadm_id"), ("icustays", "stay_id"),
                       ("labevents", "labevent_id"), ("transfers", "transfer_id"), ("prescriptions", "pharmacy_id")]:
        n, distinct = con.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {table}").fetchone()
        assert n == distinct, f"{table}.{key} not unique"
    for table in ("transfers", "icustays", "diagnoses_icd", "procedures_icd", "services", "drgcodes", "prescriptions",
                  "labevents", "chartevents"):
        orphans = con.execute(f"SELECT count(*) FROM {table} t LEFT JOIN admissions a USING (hadm_id) "
                              "WHERE a.hadm_id IS NULL OR a.subject_id <> t.subject_id").fetchone()[0]
        assert orphans == 0, f"{table} has hadm_ids missing from admissions"
    assert con.execute("SELECT count(*) FROM admissions WHERE subject_id NOT IN (SELECT subject_id FROM patients)"
                       ).fetchone()[0] == 0
    q = con.execute
    assert q("SELECT count(*) FROM admissions WHERE dischtime <= admittime"
             ).fetchone()[0] == 0
    assert q("SELECT count(*) FROM admissions WHERE edregtime IS NOT NULL AND "
             "edregtime >= admittime").fetchone()[0] == 0
    assert q("""SELECT count(*) FROM icustays i JOIN admissions a USING (hadm_id)
                WHERE i.intime < a.admittime
                   OR i.outtime > a.dischtime
                   OR i.outtime <= i.intime""").fetchone()[0] == 0
    assert q("""SELECT count(*) FROM chartevents c JOIN icustays i USING (stay_id)
                WHERE c.charttime NOT BETWEEN i.intime
                      AND i.outtime""").fetchone()[0] == 0
    assert q("""SELECT count(*) FROM labevents l JOIN admissions a USING (hadm_id)
                WHERE l.charttime > a.dischtime
                   OR l.charttime < coalesce(a.edregtime,
                                                                a.admittime)""").fetchone()[0] == 0
    # admissions of one patient never overlap
    assert q("""SELECT count(*) FROM (SELECT admittime AS adm, lag(dischtime)
                OVER (PARTITION BY subject_id ORDER BY admittime) AS prev FROM admissions)
                WHERE adm <= prev""").fetchone()[0] == 0


def test_deaths_consistent(con):
    q = con.execute
    assert q("""SELECT count(*) FROM admissions WHERE (deathtime IS NOT NULL) <> (hospital_expire_flag = 1)
                OR (hospital_expire_flag = 1) <> (coalesce(discharge_location, '') = 'DIED')""").fetchone()[0] == 0
    assert q("""SELECT count(*) FROM admissions WHERE deathtime IS NOT NULL AND (
                deathtime < admittime
                OR deathtime > dischtime)""").fetchone()[0] == 0
    assert q("""SELECT count(*) FROM admissions a JOIN patients p USING (subject_id) WHERE a.deathtime IS NOT NULL
                AND (p.dod IS NULL OR CAST(p.dod AS DATE) <> CAST(a.deathtime AS DATE))"""
             ).fetchone()[0] == 0
    # nothing happens after death: no later admission, dod never before a discharge
    assert q("""SELECT count(*) FROM admissions a JOIN patients p USING (subject_id)
                WHERE p.dod IS NOT NULL AND CAST(a.admittime AS DATE) > CAST(p.dod AS DATE)"""
             ).fetchone()[0] == 0
    assert q("SELECT count(*) FROM (SELECT subject_id FROM admissions WHERE deathtime IS NOT NULL GROUP BY 1 "
             "HAVING count(*) > 1)").fetchone()[0] == 0
    assert q("SELECT count(*) FROM patients WHERE dod IS NOT NULL").fetchone()[0] > 0


@pytest.mark.parametrize("kwargs", [{"n_patients": 0}, {"n_patients": -5}, {"n_patients": "10"},
                                    {"n_patients": 10, "seed": -1}, {"n_patients": 10, "chunk_size": 0}])
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(EhrscaleError):
        generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_unwritable_out_dir_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EhrscaleError, match="out_dir"):
        generate(blocker / "sub", 3, seed=0)
    with pytest.raises(EhrscaleError, match="out_dir"):
        generate(blocker, 3, seed=0)


def test_cli(tmp_path, capsys):
    from ehrscale.cli import main

    assert main(["synth", str(tmp_path / "o"), "--patients", "5", "--seed", "3", "--chunk-size", "2"]) == 0
    assert (tmp_path / "o" / "hosp" / "admissions.csv.gz").exists()
    assert "in_hospital_mortality" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "bad"), "--patients", "0"]) == 2
    assert "--patients" in capsys.readouterr().err


def test_model_codes_are_real_and_described():
    from ehrscale.synth import model as m
    from ehrscale.synth import tables

    dx, px, drugs = set(), set(), set()
    for codes, regimen in list(m.CHRONIC.values()) + list(m.TRAIT_CODES.values()):
        dx.update(codes)
        drugs.update(regimen)
    dx.update(m.NOISE_DX)
    dx.add(("Z66", "V4986"))
    drugs.update(m.NOISE_DRUG.values())
    drugs.update(d for d, _ in m.ROUTINE_DRUGS + m.ICU_DRUGS)
    drugs.update({"NORepinephrine", "Vasopressin", "Dextrose 50%"})
    px.update({m.VENT_LONG, m.VENT_SHORT, m.INTUBATION, m.CENTRAL_LINE})
    for p in m.PROBLEMS.values():
        dx.update((c10, c9) for c10, c9, _ in p["dx"])
        px.update((c10, c9) for c10, c9, _ in p["px"])
        drugs.update(d for d, _, _ in p["drugs"])
    for surgery in m.SURGERIES:
        dx.add(surgery[0])
        px.add(surgery[1])
    for c10, c9 in dx:
        assert (c10, 10) in tables.D_ICD_DIAGNOSES and (c9, 9) in tables.D_ICD_DIAGNOSES, (c10, c9)
    for c10, c9 in px:
        assert (c10, 10) in tables.D_ICD_PROCEDURES and (c9, 9) in tables.D_ICD_PROCEDURES, (c10, c9)
    assert drugs <= set(tables.DRUGS), drugs - set(tables.DRUGS)
    assert {int(r[0]) for r in tables.D_LABITEMS} == set(m.LABS)
    assert {int(r[0]) for r in tables.D_ITEMS} == set(m.VITALS)
