"""CSV layout of MIMIC-IV v2.2 and deterministic gzip writing of chunks of rows."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ehrscale.synth import density
from ehrscale.synth import model as m
from ehrscale.synth import tables

# table -> (module, header, timestamp columns, date columns)
LAYOUT: dict[str, tuple[str, list[str], set[str], set[str]]] = {
    "patients": ("hosp", ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"], set(), {"dod"}),
    "admissions": ("hosp", ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                            "admit_provider_id", "admission_location", "discharge_location", "insurance", "language",
                            "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag"],
                   {"admittime", "dischtime", "deathtime", "edregtime", "edouttime"}, set()),
    "transfers": ("hosp", ["subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime"],
                  {"intime", "outtime"}, set()),
    "icustays": ("icu", ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime",
                         "los"], {"intime", "outtime"}, set()),
    "diagnoses_icd": ("hosp", ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"], set(), set()),
    "procedures_icd": ("hosp", ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"], set(),
                       {"chartdate"}),
    "services": ("hosp", ["subject_id", "hadm_id", "transfertime", "prev_service", "curr_service"], {"transfertime"},
                 set()),
    "drgcodes": ("hosp", ["subject_id", "hadm_id", "drg_type", "drg_code", "description", "drg_severity",
                          "drg_mortality"], set(), set()),
    "prescriptions": ("hosp", ["subject_id", "hadm_id", "pharmacy_id", "poe_id", "poe_seq", "order_provider_id",
                               "starttime", "stoptime", "drug_type", "drug", "formulary_drug_cd", "gsn", "ndc",
                               "prod_strength", "form_rx", "dose_val_rx", "dose_unit_rx", "form_val_disp",
                               "form_unit_disp", "doses_per_24_hrs", "route"], {"starttime", "stoptime"}, set()),
    "omr": ("hosp", ["subject_id", "chartdate", "seq_num", "result_name", "result_value"], set(), {"chartdate"}),
    "labevents": ("hosp", ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
                           "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
                           "ref_range_upper", "flag", "priority", "comments"], {"charttime", "storetime"}, set()),
    "chartevents": ("icu", ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid",
                            "value", "valuenum", "valueuom", "warning"], {"charttime", "storetime"}, set()),
    "d_icd_diagnoses": ("hosp", ["icd_code", "icd_version", "long_title"], set(), set()),
    "d_icd_procedures": ("hosp", ["icd_code", "icd_version", "long_title"], set(), set()),
    "d_labitems": ("hosp", ["itemid", "label", "fluid", "category"], set(), set()),
    "d_items": ("icu", ["itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type",
                        "lownormalvalue", "highnormalvalue"], set(), set()),
}
EVENT_TABLES = [t for t in LAYOUT if not t.startswith("d_")]
GZIP_LEVEL = 2

_LAB_SORTED = np.argsort(m.LAB_IDS)
_LAB_DEC = np.array([v[6] for v in m.LABS.values()])
_LAB_UOM = pa.array([v[0] for v in m.LABS.values()])
_LAB_LO = pa.array([v[1] for v in m.LABS.values()])
_LAB_HI = pa.array([v[2] for v in m.LABS.values()])
_LAB_LOF = np.array([float(v[1]) for v in m.LABS.values()])
_LAB_HIF = np.array([float(v[2]) for v in m.LABS.values()])
_VIT_IDS = np.array(list(m.VITALS), dtype=np.int64)  # ascending
_VIT_DEC = np.array([v[1] for v in m.VITALS.values()])
_VIT_UOM = pa.array([v[0] for v in m.VITALS.values()])
_DENSE_TEXT = pa.array(density.LEVEL_TEXT)
_DENSE_UNITS = pa.array(density.CHART_UNITS + [None])  # the last: text items have no unit
_FLAG = pa.array(["", "abnormal"])
_PRIORITY = pa.array(["ROUTINE", "STAT"])
_CSV = pacsv.WriteOptions(include_header=False, quoting_style="none")


def _ts(secs, date: bool = False) -> pa.Array:
    """Integer seconds (negative = NULL) -> timestamp[s] (or date32) array."""
    secs = np.asarray(secs, dtype=np.int64)
    dt = secs.astype("datetime64[s]")
    if date:
        dt = dt.astype("datetime64[D]")
    return pa.array(dt, mask=secs < 0)


def _round(vals: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    out = np.empty(len(vals))
    for d in np.unique(decimals):
        k = decimals == d
        out[k] = np.round(vals[k], int(d))
    return out


def encode(tbl: pa.Table) -> bytes:
    """CSV body (no header), quoting only values that need it, like MIMIC's files."""
    buf = io.BytesIO()
    try:
        pacsv.write_csv(tbl, buf, _CSV)
        return buf.getvalue()
    except pa.ArrowInvalid:  # a value holds a comma or quote: minimal quoting via the csv module
        cols = []
        for col in tbl.columns:
            if pa.types.is_timestamp(col.type):
                col = pc.strftime(col, "%Y-%m-%d %H:%M:%S")
            elif pa.types.is_date(col.type):
                col = pc.strftime(col, "%Y-%m-%d")
            cols.append(col.to_pylist())
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(zip(*cols))
        return text.getvalue().encode("utf-8")


def small_table(table: str, rows: list[tuple]) -> pa.Table:
    _, header, ts, dates = LAYOUT[table]
    cols = list(zip(*rows))
    data = {}
    for name, col in zip(header, cols):
        if name in ts or name in dates:
            data[name] = _ts([-1 if v is None else v for v in col], date=name in dates)
        else:
            data[name] = pa.array(col)
    return pa.table(data)


def lab_table(cols: dict[str, list]) -> pa.Table:
    """labevents rows; a negative hadm_id (an outpatient draw) is written empty."""
    c = {k: np.concatenate(v) for k, v in cols.items()}
    n = len(c["itemid"])
    j = _LAB_SORTED[np.searchsorted(m.LAB_IDS[_LAB_SORTED], c["itemid"])]
    val = _round(c["valuenum"], _LAB_DEC[j])
    abnormal = ((val < _LAB_LOF[j]) | (val > _LAB_HIF[j])).astype(np.int64)
    empty = pa.nulls(n, pa.string())
    return pa.table({
        "labevent_id": c["labevent_id"], "subject_id": c["subject_id"],
        "hadm_id": pa.array(c["hadm_id"], mask=c["hadm_id"] < 0),
        "specimen_id": c["specimen_id"], "itemid": c["itemid"], "order_provider_id": empty,
        "charttime": _ts(c["charttime"]), "storetime": _ts(c["storetime"]), "value": val, "valuenum": val,
        "valueuom": _LAB_UOM.take(j), "ref_range_lower": _LAB_LO.take(j), "ref_range_upper": _LAB_HI.take(j),
        "flag": _FLAG.take(abnormal), "priority": _PRIORITY.take(c["priority"].astype(np.int64)), "comments": empty,
    })


def chart_table(cols: dict[str, list]) -> pa.Table:
    c = {k: np.concatenate(v) for k, v in cols.items()}
    j = np.searchsorted(_VIT_IDS, c["itemid"])
    val = _round(c["valuenum"], _VIT_DEC[j])
    return pa.table({
        "subject_id": c["subject_id"], "hadm_id": c["hadm_id"], "stay_id": c["stay_id"],
        "caregiver_id": c["caregiver_id"], "charttime": _ts(c["charttime"]), "storetime": _ts(c["storetime"]),
        "itemid": c["itemid"], "value": val, "valuenum": val, "valueuom": _VIT_UOM.take(j),
        "warning": np.zeros(len(j), dtype=np.int64),
    })


def dense_chart_table(cols: dict[str, list]) -> pa.Table:
    """The extra ICU charting of a ``mimic``-density cohort: numeric items with units, text items as text."""
    c = {k: np.concatenate(v) for k, v in cols.items()}
    item, text = c["item"], c["text"]
    is_num = text < 0
    num = np.minimum(item, len(density.CHART_DECIMALS) - 1)
    val = _round(c["valuenum"], np.where(is_num, density.CHART_DECIMALS[num], 0))
    value = pc.if_else(pa.array(is_num), pc.cast(pa.array(val), pa.string()), _DENSE_TEXT.take(np.maximum(text, 0)))
    return pa.table({
        "subject_id": c["subject_id"], "hadm_id": c["hadm_id"], "stay_id": c["stay_id"],
        "caregiver_id": c["caregiver_id"], "charttime": _ts(c["charttime"]), "storetime": _ts(c["storetime"]),
        "itemid": density.CHART_IDS[item], "value": value, "valuenum": pa.array(val, mask=~is_num),
        "valueuom": _DENSE_UNITS.take(np.where(is_num, num, len(density.CHART_UNITS))),
        "warning": np.zeros(len(item), dtype=np.int64),
    })


def _in_patient_order(default: pa.Table | None, dense: pa.Table) -> pa.Table:
    """A dense cohort's rows: each patient's default rows, then its extra ones (a stable sort), so the file
    does not depend on how patients were chunked."""
    if default is None:
        return dense
    default = default.cast(dense.schema)  # chartevents' numeric value as text: the CSV writer's own rendering
    both = pa.concat_tables([default, dense])
    return both.take(pc.sort_indices(both, [("subject_id", "ascending")]))


def encode_chunk(chunk) -> tuple[dict[str, bytes], dict[str, int]]:
    """One chunk's rows as CSV bodies per event table, and their row counts."""
    tbls: dict[str, pa.Table] = {}
    for table in EVENT_TABLES:
        if table in ("labevents", "chartevents"):
            build = lab_table if table == "labevents" else chart_table
            dense_build = lab_table if table == "labevents" else dense_chart_table
            default = build(chunk.cols[table]) if chunk.cols[table] else None
            dense = chunk.cols[f"{table}_dense"]
            tbl = _in_patient_order(default, dense_build(dense)) if dense else default
        else:
            tbl = small_table(table, chunk.rows[table]) if chunk.rows.get(table) else None
        if tbl is not None and tbl.num_rows:
            tbls[table] = tbl
    return {t: encode(x) for t, x in tbls.items()}, {t: x.num_rows for t, x in tbls.items()}


class Streams:
    """One gzip stream per table (mtime=0, fixed level) so equal input gives equal bytes."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, tuple] = {}
        self.rows: dict[str, int] = {}
        for table in EVENT_TABLES:
            self._open(table)

    def _open(self, table: str):
        module, header, _, _ = LAYOUT[table]
        path = self.root / module / f"{table}.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(path, "wb")
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0)
        gz.write((",".join(header) + "\n").encode())
        self.files[table] = (raw, gz)
        self.rows[table] = 0
        return gz

    def write_table(self, table: str, tbl: pa.Table) -> None:
        if tbl.num_rows:
            self.write_encoded({table: encode(tbl)}, {table: tbl.num_rows})

    def write_encoded(self, encoded: dict[str, bytes], rows: dict[str, int]) -> None:
        """Append one chunk's CSV bodies (from :func:`encode_chunk`), table by table."""
        for table, data in encoded.items():
            self.files[table][1].write(data)
            self.rows[table] += rows[table]

    def write_dictionaries(self, dx: set, px: set, dense: bool = False) -> None:
        def rows_for(codes, titles):
            return [(code, ver, titles[(code, ver)]) for code, ver in sorted(codes, key=lambda cv: (cv[1], cv[0]))]

        dicts = {
            "d_icd_diagnoses": rows_for(dx, tables.D_ICD_DIAGNOSES),
            "d_icd_procedures": rows_for(px, tables.D_ICD_PROCEDURES),
            "d_labitems": [(int(r[0]),) + tuple(r[1:]) for r in tables.D_LABITEMS],
            "d_items": [(int(r[0]),) + tuple(x or None for x in r[1:])
                        for r in tables.D_ITEMS + (density.D_ITEMS if dense else [])],
        }
        for table, rows in dicts.items():
            gz = self._open(table)
            self.write_table(table, small_table(table, rows))
            gz.close()
            self.files.pop(table)[0].close()

    def close(self) -> None:
        for raw, gz in self.files.values():
            gz.close()
            raw.close()
        self.files.clear()
