"""MIMIC-IV (v2.2+) raw tables and how each becomes MEDS events.

Each :class:`Table` names the columns extraction reads, with their SQL types, and the
DuckDB query that turns its typed rows (view ``t_<name>``) into events with the columns
``subject_id, time, code, numeric_value, text_value, hadm_id, priority, seq``.

Time placement, chosen so that no event is visible before it was knowable:

- Diagnoses (``diagnoses_icd``) and DRG codes carry no time in MIMIC. They are placed at
  their admission's **discharge time**, when they are coded. Admission-time tasks
  therefore never see the current admission's diagnoses.
- Lab and chart values are placed when their result was stored (``storetime``; ``charttime``
  when it is missing): a value drawn before a prediction time but resulted after it is not
  yet known then.
- Date-only events (``procedures_icd.chartdate``, ``omr.chartdate``, ``patients.dod``) are
  placed at the **end** of their day (23:59:59), never earlier than their date. A procedure
  dated on its admission's discharge day sits at the discharge; one dated before its
  admission moves later, to the admittime; one dated after its discharge stays on its own
  day (counted as ``dated_after_discharge`` in ``extract_summary.json``).

docs/timing.md states every rule in words.
- ``MEDS_BIRTH`` is 1 January of ``anchor_year - anchor_age``; gender is static (null time).

``priority`` orders events that share a timestamp (admission first, death last) and
``seq`` keeps MIMIC's own ordering (diagnosis ``seq_num``) within a priority.
"""

from __future__ import annotations

from dataclasses import dataclass

END_OF_DAY = "INTERVAL '23 hours 59 minutes 59 seconds'"

# Same-timestamp order: static/birth, admission facts, movements, measurements, drugs,
# procedures, ICU discharge, discharge-time coding, discharge, death.
PRIO_STATIC, PRIO_ADMIT, PRIO_MOVE, PRIO_MEASURE, PRIO_DRUG, PRIO_PROC = 0, 1, 2, 3, 4, 5
PRIO_ICU_OUT, PRIO_CODING, PRIO_DISCHARGE, PRIO_DEATH = 6, 7, 8, 9


@dataclass(frozen=True)
class Table:
    name: str
    module: str  # "hosp" or "icu"
    columns: dict[str, str]  # column -> SQL type it must parse as
    key_columns: tuple[str, ...] = ("subject_id",)  # must be non-null for a row to count
    events_sql: str | None = None  # None for dictionary tables
    counts: tuple[tuple[str, str], ...] = ()  # (name, SQL giving one count) reported in extract_summary.json


def _ev(time: str, code: str, prio: int, *, table: str, numeric: str = "NULL", text: str = "NULL",
        hadm: str = "hadm_id", seq: str = "0", where: str = "TRUE") -> str:
    return (
        f"SELECT subject_id, {time} AS time, {code} AS code, CAST({numeric} AS FLOAT) AS numeric_value, "
        f"CAST({text} AS VARCHAR) AS text_value, CAST({hadm} AS BIGINT) AS hadm_id, {prio} AS priority, "
        f"CAST({seq} AS INTEGER) AS seq FROM {table} WHERE {where}"
    )


def _union(*parts: str) -> str:
    return "\nUNION ALL\n".join(parts)


_ADM = "t_admissions"
_ADMISSION_FACTS = [
    ("ADMISSION", "admission_type"),
    ("ADMISSION_LOCATION", "admission_location"),
    ("INSURANCE", "insurance"),
    ("MARITAL_STATUS", "marital_status"),
    ("RACE", "race"),
]

TABLES: dict[str, Table] = {}


def _register(table: Table) -> None:
    TABLES[table.name] = table


_register(Table(
    "patients", "hosp",
    {"subject_id": "BIGINT", "gender": "VARCHAR", "anchor_age": "INTEGER", "anchor_year": "INTEGER", "dod": "DATE"},
    key_columns=("subject_id", "anchor_age", "anchor_year"),
    events_sql=_union(
        _ev("NULL::TIMESTAMP", "'GENDER//' || gender", PRIO_STATIC, table="t_patients", hadm="NULL",
            where="gender IS NOT NULL"),
        _ev("make_timestamp(anchor_year - anchor_age, 1, 1, 0, 0, 0)", "'MEDS_BIRTH'", PRIO_STATIC,
            table="t_patients", hadm="NULL"),
        # Out-of-hospital death: only when no admission recorded the death itself.
        _ev(f"CAST(dod AS TIMESTAMP) + {END_OF_DAY}", "'MEDS_DEATH'", PRIO_DEATH, table="t_patients", hadm="NULL",
            where=f"dod IS NOT NULL AND subject_id NOT IN (SELECT subject_id FROM {_ADM} WHERE deathtime IS NOT NULL)"),
    ),
))

_register(Table(
    "admissions", "hosp",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "admittime": "TIMESTAMP", "dischtime": "TIMESTAMP",
     "deathtime": "TIMESTAMP", "admission_type": "VARCHAR", "admission_location": "VARCHAR",
     "discharge_location": "VARCHAR", "insurance": "VARCHAR", "marital_status": "VARCHAR", "race": "VARCHAR"},
    key_columns=("subject_id", "hadm_id", "admittime", "dischtime"),
    events_sql=_union(
        *[_ev("admittime", f"'{prefix}//' || {col}", PRIO_ADMIT, table=_ADM, seq=str(i), where=f"{col} IS NOT NULL")
          for i, (prefix, col) in enumerate(_ADMISSION_FACTS)],
        _ev("dischtime", "'DISCHARGE//' || coalesce(discharge_location, 'UNKNOWN')", PRIO_DISCHARGE, table=_ADM),
        _ev("deathtime", "'MEDS_DEATH'", PRIO_DEATH, table=_ADM, where="deathtime IS NOT NULL"),
    ),
))

_register(Table(
    "transfers", "hosp",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "eventtype": "VARCHAR", "careunit": "VARCHAR", "intime": "TIMESTAMP"},
    key_columns=("subject_id", "intime"),
    # The 'discharge' transfer row duplicates the admission's discharge event.
    events_sql=_ev("intime", "'TRANSFER//' || coalesce(careunit, 'UNKNOWN')", PRIO_MOVE, table="t_transfers",
                   where="eventtype IS DISTINCT FROM 'discharge'"),
))

_register(Table(
    "icustays", "icu",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "stay_id": "BIGINT", "first_careunit": "VARCHAR",
     "last_careunit": "VARCHAR", "intime": "TIMESTAMP", "outtime": "TIMESTAMP"},
    key_columns=("subject_id", "hadm_id", "intime"),
    events_sql=_union(
        _ev("intime", "'ICU_ADMISSION//' || coalesce(first_careunit, 'UNKNOWN')", PRIO_MOVE, table="t_icustays"),
        _ev("outtime", "'ICU_DISCHARGE//' || coalesce(last_careunit, 'UNKNOWN')", PRIO_ICU_OUT, table="t_icustays",
            where="outtime IS NOT NULL"),
    ),
))

_register(Table(
    "diagnoses_icd", "hosp",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "seq_num": "INTEGER", "icd_code": "VARCHAR", "icd_version": "INTEGER"},
    key_columns=("subject_id", "hadm_id", "icd_code", "icd_version"),
    events_sql=_ev(
        "a.dischtime",
        "CASE d.icd_version WHEN 9 THEN 'ICD9CM//' ELSE 'ICD10CM//' END || trim(d.icd_code)",
        PRIO_CODING, table=f"t_diagnoses_icd d JOIN {_ADM} a USING (subject_id, hadm_id)", seq="d.seq_num",
    ),
))

_register(Table(
    "procedures_icd", "hosp",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "seq_num": "INTEGER", "chartdate": "DATE",
     "icd_code": "VARCHAR", "icd_version": "INTEGER"},
    key_columns=("subject_id", "hadm_id", "chartdate", "icd_code", "icd_version"),
    # End of its day; on the admission's discharge day, at the discharge; never before the admission.
    # Never clipped back to an earlier discharge: a row billed to one admission but dated later
    # (MIMIC has them) stays on its own day, so it cannot reach predictions made before that day.
    events_sql=_ev(
        "greatest(CASE WHEN p.chartdate = CAST(a.dischtime AS DATE) THEN a.dischtime "
        f"ELSE CAST(p.chartdate AS TIMESTAMP) + {END_OF_DAY} END, a.admittime)",
        "CASE p.icd_version WHEN 9 THEN 'ICD9PCS//' ELSE 'ICD10PCS//' END || trim(p.icd_code)",
        PRIO_PROC, table=f"t_procedures_icd p JOIN {_ADM} a USING (subject_id, hadm_id)", seq="p.seq_num",
    ),
    counts=tuple(
        (name, f"SELECT count(*) FROM t_procedures_icd p JOIN {_ADM} a USING (subject_id, hadm_id) WHERE {cond}")
        for name, cond in (("dated_after_discharge", "p.chartdate > CAST(a.dischtime AS DATE)"),
                           ("dated_before_admission", "p.chartdate < CAST(a.admittime AS DATE)"))
    ),
))

def _measurements(name: str, module: str, prefix: str) -> Table:
    """labevents and chartevents: one event per row, coded by item and unit, at its storetime."""
    return Table(
        name, module,
        {"subject_id": "BIGINT", "hadm_id": "BIGINT", "itemid": "BIGINT", "charttime": "TIMESTAMP",
         "storetime": "TIMESTAMP", "value": "VARCHAR", "valuenum": "DOUBLE", "valueuom": "VARCHAR"},
        key_columns=("subject_id", "itemid", "charttime"),
        events_sql=_ev("greatest(charttime, coalesce(storetime, charttime))",
                       f"'{prefix}//' || itemid || '//' || coalesce(valueuom, 'UNK')", PRIO_MEASURE,
                       table=f"t_{name}", numeric="valuenum", text="CASE WHEN valuenum IS NULL THEN value END"),
    )


_register(_measurements("labevents", "hosp", "LAB"))
_register(_measurements("chartevents", "icu", "CHART"))

_register(Table(
    "prescriptions", "hosp",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "starttime": "TIMESTAMP", "drug": "VARCHAR"},
    key_columns=("subject_id",),
    events_sql=_ev("starttime", "'MEDICATION//' || trim(drug)", PRIO_DRUG, table="t_prescriptions",
                   where="starttime IS NOT NULL AND drug IS NOT NULL AND trim(drug) <> ''"),
))

_BP = "result_name LIKE 'Blood Pressure%'"
_register(Table(
    "omr", "hosp",
    {"subject_id": "BIGINT", "chartdate": "DATE", "seq_num": "INTEGER", "result_name": "VARCHAR",
     "result_value": "VARCHAR"},
    key_columns=("subject_id", "chartdate", "result_name"),
    # Blood pressure "120/80" becomes two numeric events.
    events_sql=_union(
        *[_ev(f"CAST(chartdate AS TIMESTAMP) + {END_OF_DAY}", f"'OMR//' || result_name || ' {part}'", PRIO_MEASURE,
              table="t_omr", hadm="NULL", seq="seq_num",
              numeric=f"TRY_CAST(split_part(result_value, '/', {i}) AS DOUBLE)", where=_BP)
          for i, part in ((1, "Systolic"), (2, "Diastolic"))],
        _ev(f"CAST(chartdate AS TIMESTAMP) + {END_OF_DAY}", "'OMR//' || result_name", PRIO_MEASURE, table="t_omr",
            hadm="NULL", seq="seq_num", numeric="TRY_CAST(result_value AS DOUBLE)",
            text="CASE WHEN TRY_CAST(result_value AS DOUBLE) IS NULL THEN result_value END", where=f"NOT ({_BP})"),
    ),
))

_register(Table(
    "services", "hosp",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "transfertime": "TIMESTAMP", "curr_service": "VARCHAR"},
    key_columns=("subject_id", "transfertime", "curr_service"),
    events_sql=_ev("transfertime", "'SERVICE//' || curr_service", PRIO_MOVE, table="t_services"),
))

_register(Table(
    "drgcodes", "hosp",
    {"subject_id": "BIGINT", "hadm_id": "BIGINT", "drg_type": "VARCHAR", "drg_code": "VARCHAR", "description": "VARCHAR"},
    key_columns=("subject_id", "hadm_id", "drg_type", "drg_code"),
    events_sql=_ev("a.dischtime", "'DRG//' || g.drg_type || '//' || trim(g.drg_code)", PRIO_CODING,
                   table=f"t_drgcodes g JOIN {_ADM} a USING (subject_id, hadm_id)", text="g.description"),
))

# Dictionaries: they only describe codes (metadata/codes.parquet).
for _name, _module, _cols, _keys in [
    ("d_icd_diagnoses", "hosp", {"icd_code": "VARCHAR", "icd_version": "INTEGER", "long_title": "VARCHAR"}, ("icd_code",)),
    ("d_icd_procedures", "hosp", {"icd_code": "VARCHAR", "icd_version": "INTEGER", "long_title": "VARCHAR"}, ("icd_code",)),
    ("d_labitems", "hosp", {"itemid": "BIGINT", "label": "VARCHAR", "fluid": "VARCHAR"}, ("itemid",)),
    ("d_items", "icu", {"itemid": "BIGINT", "label": "VARCHAR"}, ("itemid",)),
]:
    _register(Table(_name, _module, _cols, key_columns=_keys))

# Extraction needs these two whatever the config says: every other table joins to them.
ALWAYS_REQUIRED = ("patients", "admissions")

DEFAULT_TABLES: dict[str, str] = {
    "patients": "required",
    "admissions": "required",
    "transfers": "required",
    "icustays": "required",
    "diagnoses_icd": "required",
    "procedures_icd": "required",
    "labevents": "required",
    "prescriptions": "required",
    "omr": "optional",
    "services": "optional",
    "drgcodes": "optional",
    "chartevents": "optional",
    "d_icd_diagnoses": "optional",
    "d_icd_procedures": "optional",
    "d_labitems": "optional",
    "d_items": "optional",
}

# SQL giving (code, description, parent_codes) for codes a dictionary table describes.
CODE_DESCRIPTIONS: dict[str, str] = {
    "d_icd_diagnoses": (
        "SELECT CASE icd_version WHEN 9 THEN 'ICD9CM//' ELSE 'ICD10CM//' END || trim(icd_code) AS code, "
        "long_title AS description FROM t_d_icd_diagnoses"
    ),
    "d_icd_procedures": (
        "SELECT CASE icd_version WHEN 9 THEN 'ICD9PCS//' ELSE 'ICD10PCS//' END || trim(icd_code) AS code, "
        "long_title AS description FROM t_d_icd_procedures"
    ),
}
# Lab and chart codes carry a unit, so they are matched on their item id prefix.
ITEM_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "d_labitems": ("LAB", "label || coalesce(' (' || fluid || ')', '')"),
    "d_items": ("CHART", "label"),
}
