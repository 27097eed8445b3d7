"""Raw MIMIC-IV CSVs -> a MEDS dataset, with DuckDB.

Steps: check the output is writable and every configured table exists and has the columns
we read; load each into DuckDB once as text and cast, counting rows that fail to parse (a
file that is not CSV at all fails, naming its first bad line); count, drop or fail on
duplicate and contradictory patients and admissions rows (:func:`check_consistency`); run
each table's event query (see :mod:`ehrscale.extract.mimic` and docs/timing.md for codes and time
placement) after assigning each patient a split (from its subject_id alone) and a shard,
staging the events by shard as compressed parquet; sort each shard alone by subject and time
into ``data/<split>/<shard>.parquet``; write ``metadata/``. The output directory appears only
when everything succeeded.

Memory and scratch disk follow the shard, not the cohort: the raw tables live in DuckDB's
compressed on-disk storage (a scratch database), DuckDB spills past its memory limit, the
events are never one table or one sort, and Python holds one row group at a time.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import logging
import os
import tempfile
import time as _time
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ehrscale import __version__
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_dir, check_writable, write_json
from ehrscale.core.settings import load_settings
from ehrscale.core.sql import add_duckdb_arguments, apply_duckdb_arguments, connect, duckdb_failure, quote, quote_list
from ehrscale.extract.dataset import stage_by_shard, write_shards
from ehrscale.extract.mimic import ALWAYS_REQUIRED, CODE_DESCRIPTIONS, ITEM_DESCRIPTIONS, TABLES, Table
from ehrscale.extract.settings import ExtractSettings
from ehrscale.extract.splits import SPLITS, assign_shards, assign_splits

log = logging.getLogger(__name__)

def find_table_file(raw_dir: Path, table: Table) -> Path | None:
    for suffix in (".csv.gz", ".csv"):
        path = raw_dir / table.module / f"{table.name}{suffix}"
        if path.exists():
            return path
    return None


def read_header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise EhrscaleError(f"{path}: cannot read the header ({err})") from err
    if not header:
        raise EhrscaleError(f"{path}: file is empty (no header row)")
    return [h.strip() for h in header]


def locate_tables(raw_dir: Path, statuses: dict[str, str]) -> dict[str, Path]:
    """Find each configured table's file and check its columns, before any work starts."""
    if not raw_dir.is_dir():
        raise EhrscaleError(f"raw MIMIC-IV directory not found: {raw_dir}")
    found: dict[str, Path] = {}
    for name, status in statuses.items():
        if status == "skip":
            continue
        table = TABLES[name]
        path = find_table_file(raw_dir, table)
        if path is None:
            where = raw_dir / table.module
            if status == "required":
                raise EhrscaleError(f"required table '{name}' not found: no {name}.csv.gz or {name}.csv in {where}")
            log.warning("optional table '%s' not found in %s; skipping it", name, where)
            continue
        header = read_header(path)
        missing = [c for c in table.columns if c not in header]
        if missing:
            raise EhrscaleError(f"{path}: missing column(s) {', '.join(missing)} (table '{name}'; header has {header})")
        found[name] = path
    return found


def diagnose_csv(path: Path) -> str | None:
    """Why DuckDB could not read ``path``: the first line that is not CSV text, or a broken gzip.

    Runs only after DuckDB failed, so good files never pay for this scan.
    """
    first_crlf = first_lf = None
    n = 0
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if b"\0" in line:
                    return f"line {n}: binary data (NUL bytes)"
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return f"line {n}: binary data (not UTF-8 text)"
                if line.endswith(b"\r\n"):
                    first_crlf = first_crlf or n
                elif line.endswith(b"\n"):
                    first_lf = first_lf or n
                if first_crlf and first_lf:
                    return (f"mixed line endings: line {first_lf} ends in LF, line {first_crlf} in CRLF "
                            "(convert the file to one kind)")
    except (OSError, EOFError, zlib.error) as err:
        return f"the gzip stream is truncated or corrupt after line {n} ({err})"
    return None


def load_table(con: duckdb.DuckDBPyConnection, table: Table, path: Path, tolerance: float) -> dict:
    """Load one CSV as ``t_<name>`` with typed columns; count and drop unparsable rows."""
    cols = list(table.columns)
    reader = (f"read_csv({quote(path)}, header=true, all_varchar=true, store_rejects=true, "
              f"rejects_table='rej_{table.name}', rejects_scan='scan_{table.name}')")
    casts, bad_terms = [], []
    for i, (col, sql_type) in enumerate(table.columns.items()):
        raw = f"nullif(trim(\"{col}\"), '')"
        casts.append(f"TRY_CAST({raw} AS {sql_type}) AS \"{col}\"")
        failed = f"({raw} IS NOT NULL AND TRY_CAST({raw} AS {sql_type}) IS NULL)"
        if col in table.key_columns:
            failed = f"({raw} IS NULL OR TRY_CAST({raw} AS {sql_type}) IS NULL)"
        bad_terms.append(f"(CASE WHEN {failed} THEN {1 << i} ELSE 0 END)")
    select_cols = ", ".join(f'"{c}"' for c in cols)
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE t_{table.name} AS SELECT {', '.join(casts)}, "
            f"({' + '.join(bad_terms)}) AS _bad FROM (SELECT {select_cols} FROM {reader})"
        )
    except duckdb.OutOfMemoryException:
        raise  # not the file's fault: extract() says so
    except duckdb.Error as err:
        reason = diagnose_csv(path) or str(err).strip().splitlines()[0]
        raise EhrscaleError(f"{path}: not a readable CSV file: {reason}") from err
    sums = ", ".join(f"sum((_bad >> {i}) & 1)" for i in range(len(cols)))
    row = con.execute(f"SELECT count(*), count(*) FILTER (WHERE _bad <> 0), {sums} FROM t_{table.name}").fetchone()
    n_rows, n_bad_values, per_col = row[0], row[1], row[2:]
    # DuckDB writes one reject row per bad column of a line.
    n_malformed = con.execute(f"SELECT count(DISTINCT line) FROM rej_{table.name}").fetchone()[0]
    n_total = n_rows + n_malformed
    n_bad = n_bad_values + n_malformed
    if n_bad:
        detail = [f"column '{c}': {int(k)} row(s)" for c, k in zip(cols, per_col) if k]
        if n_malformed:
            first = con.execute(f"SELECT line, error_message FROM rej_{table.name} ORDER BY line LIMIT 1").fetchone()
            detail.append(f"{n_malformed} malformed line(s), first at line {first[0]}: {first[1]}")
        message = f"{path}: {n_bad} of {n_total} row(s) unparsable ({'; '.join(detail)})"
        if n_bad > tolerance * n_total:
            raise EhrscaleError(message + f"; above extract.max_unparsable_fraction={tolerance}")
        log.warning("%s; dropped (within tolerance %s)", message, tolerance)
        con.execute(f"DELETE FROM t_{table.name} WHERE _bad <> 0")
    return {"source_rows": int(n_total), "unparsable_rows": int(n_bad), "rows": int(n_total - n_bad)}


def _inconsistent_rows(con: duckdb.DuckDBPyConnection, name: str, key: str) -> tuple[int, list[str], int, int]:
    """Drop exact duplicate rows of ``t_<name>`` and every row of a ``key`` whose rows disagree.

    Returns (rows dropped, problems in words, duplicate rows, conflicting keys).
    """
    cols = list(TABLES[name].columns)
    quoted = ", ".join(f'"{c}"' for c in cols)
    n_before = con.execute(f"SELECT count(*) FROM t_{name}").fetchone()[0]
    con.execute(f"CREATE OR REPLACE TABLE t_{name} AS SELECT DISTINCT {quoted}, 0 AS _bad FROM t_{name}")
    n_dup = n_before - con.execute(f"SELECT count(*) FROM t_{name}").fetchone()[0]
    problems = []
    if n_dup:
        problems.append(f"{n_dup} exact duplicate row(s)")
    differs = ", ".join(f"count(DISTINCT \"{c}\") + max(CASE WHEN \"{c}\" IS NULL THEN 1 ELSE 0 END) "
                        f"- min(CASE WHEN \"{c}\" IS NULL THEN 1 ELSE 0 END) > 1 AS \"{c}\""
                        for c in cols if c != key)
    conflicts = con.execute(f"SELECT {key}, count(*), {differs} FROM t_{name} GROUP BY {key} HAVING count(*) > 1 "
                            f"ORDER BY {key}").fetchall()
    n_conflict = sum(r[1] for r in conflicts)
    if conflicts:
        first = conflicts[0]
        columns = [c for c, d in zip([c for c in cols if c != key], first[2:]) if d]
        problems.append(f"{len(conflicts)} {key}(s) with conflicting rows ({n_conflict} rows; first: {key} "
                        f"{first[0]} has {first[1]} rows that differ in {', '.join(columns)})")
        con.execute(f"DELETE FROM t_{name} WHERE {key} IN (SELECT {key} FROM t_{name} GROUP BY {key} "
                    "HAVING count(*) > 1)")
    return n_dup + n_conflict, problems, n_dup, len(conflicts)


def check_consistency(con: duckdb.DuckDBPyConnection, paths: dict[str, Path], tolerance: float,
                      summary: dict) -> None:
    """Duplicate and contradictory rows of patients and admissions: count, drop, or fail.

    Rules (docs/timing.md and the README): an exact duplicate row is dropped; a subject
    (patients) or admission (admissions) with rows that disagree is dropped whole, as
    nothing says which row is right; a ``dod`` before the date of the subject's last
    admittime is dropped (the subject keeps its in-hospital death, if any). Each is
    counted in ``extract_summary.json``; above ``tolerance`` of a table's rows, the run fails.
    """
    for name, key in (("admissions", "hadm_id"), ("patients", "subject_id")):
        n_rows = summary[name]["rows"]
        dropped, problems, n_dup, n_conflict = _inconsistent_rows(con, name, key)
        summary[name]["duplicate_rows"] = int(n_dup)
        summary[name][f"conflicting_{key}s"] = int(n_conflict)
        if name == "patients":
            late = con.execute(
                "SELECT p.subject_id, p.dod, a.last_admit FROM t_patients p JOIN (SELECT subject_id, "
                "max(admittime) AS last_admit FROM t_admissions GROUP BY subject_id) a USING (subject_id) "
                "WHERE p.dod < CAST(a.last_admit AS DATE) ORDER BY p.subject_id").fetchall()
            summary[name]["dod_before_admission"] = len(late)
            if late:
                sid, dod, admit = late[0]
                problems.append(f"{len(late)} subject(s) with a dod before their last admission (first: "
                                f"subject_id {sid}, dod {dod}, admittime {admit})")
                con.execute("UPDATE t_patients SET dod = NULL WHERE subject_id IN (SELECT p.subject_id FROM "
                            "t_patients p JOIN t_admissions a USING (subject_id) WHERE p.dod < CAST(a.admittime AS DATE))")
                dropped += len(late)
        if not problems:
            continue
        message = f"{paths[name]}: {'; '.join(problems)}"
        if dropped > tolerance * n_rows:
            raise EhrscaleError(f"{message}; above extract.max_inconsistent_fraction={tolerance} (raise it to drop "
                                "them by the documented rules)")
        log.warning("%s; dropped (within extract.max_inconsistent_fraction=%s)", message, tolerance)
        summary[name]["rows"] = int(con.execute(f"SELECT count(*) FROM t_{name}").fetchone()[0])


# Each table's event query gives these columns, in this order (mimic.Table.events_sql).
EVENT_COLUMNS = {"subject_id": "BIGINT", "time": "TIMESTAMP", "code": "VARCHAR", "numeric_value": "FLOAT",
                 "text_value": "VARCHAR", "hadm_id": "BIGINT", "priority": "INTEGER", "seq": "INTEGER"}
UNKNOWN_SUBJECT = "unknown_subject"  # the staged split of events whose subject is not in patients


def build_events(con: duckdb.DuckDBPyConnection, loaded: list[str], summary: dict, staged: Path) -> list[Path]:
    """Each table's events, staged by (split, shard) under ``staged/<table>/`` as compressed parquet;
    a view ``events`` reads them all. Returns the tables' staging roots."""
    typed = ", ".join(f"CAST(e.{c} AS {t}) AS {c}" for c, t in EVENT_COLUMNS.items())
    roots = []
    for name in loaded:
        sql = TABLES[name].events_sql
        if sql is None:
            continue
        t0 = _time.perf_counter()
        root = staged / name
        n = stage_by_shard(con, f"SELECT coalesce(s.split, {quote(UNKNOWN_SUBJECT)}) AS split, "
                                f"coalesce(s.shard, 0) AS shard, {typed} FROM ({sql}) AS e({', '.join(EVENT_COLUMNS)}) "
                                "LEFT JOIN subjects s USING (subject_id)", root)
        roots.append(root)
        summary[name]["events"] = n
        for count_name, count_sql in TABLES[name].counts:
            summary[name][count_name] = int(con.execute(count_sql).fetchone()[0])
        log.info("%-15s %10d rows -> %10d events (%.1fs)", name, summary[name]["rows"], n, _time.perf_counter() - t0)
    files = [str(f) for root in roots for f in sorted(root.rglob("*.parquet"))]
    columns = ", ".join(f"{c} {t}" for c, t in EVENT_COLUMNS.items())
    con.execute(f"CREATE OR REPLACE VIEW events AS SELECT {', '.join(EVENT_COLUMNS)} FROM read_parquet({quote_list(files)})"
                if files else f"CREATE OR REPLACE TABLE events ({columns})")
    return roots


def assign_subjects(con: duckdb.DuckDBPyConnection, settings: ExtractSettings) -> dict[str, int]:
    ids = np.array([r[0] for r in con.execute("SELECT DISTINCT subject_id FROM t_patients ORDER BY 1").fetchall()],
                   dtype=np.int64)
    if len(ids) == 0:
        raise EhrscaleError("empty cohort: the patients table has no valid rows")
    splits = assign_splits(ids, settings.split_fractions, settings.split_salt)
    shard = assign_shards(ids, splits, settings.subjects_per_shard)
    subjects = pa.table({"subject_id": ids, "split": pa.array(splits.astype(str)), "shard": shard})
    con.register("subjects_arrow", subjects)
    con.execute("CREATE OR REPLACE TEMP TABLE subjects AS SELECT * FROM subjects_arrow")
    con.unregister("subjects_arrow")
    return {s: int((splits == s).sum()) for s in SPLITS}


def write_data(con: duckdb.DuckDBPyConnection, roots: list[Path], data_dir: Path) -> dict[str, int]:
    """Each shard's events in (subject, time, priority, ...) order, one file per shard."""
    return write_shards(con, roots, "subject_id, time, code, numeric_value, text_value, hadm_id",
                        "subject_id, time NULLS FIRST, priority, seq, code, numeric_value NULLS LAST, "
                        "text_value NULLS LAST, hadm_id NULLS LAST", data_dir)


def write_metadata(con: duckdb.DuckDBPyConnection, meta_dir: Path, loaded: list[str], name: str,
                   summary: dict) -> None:
    import meds

    meta_dir.mkdir(parents=True, exist_ok=True)
    descriptions = [CODE_DESCRIPTIONS[t] for t in loaded if t in CODE_DESCRIPTIONS]
    for t, (prefix, label) in ITEM_DESCRIPTIONS.items():
        if t in loaded:
            descriptions.append(f"SELECT '{prefix}//' || itemid || '//' AS code_prefix, {label} AS description FROM t_{t}")
    exact = [d for d in descriptions if "code_prefix" not in d]
    by_item = [d for d in descriptions if "code_prefix" in d]
    exact_sql = " UNION ALL ".join(exact) if exact else "SELECT NULL::VARCHAR AS code, NULL::VARCHAR AS description"
    item_sql = (" UNION ALL ".join(by_item) if by_item
                else "SELECT NULL::VARCHAR AS code_prefix, NULL::VARCHAR AS description")
    codes = con.sql(f"""
        WITH used AS (SELECT DISTINCT code FROM events),
             drg AS (SELECT code, min(text_value) AS description FROM events WHERE code LIKE 'DRG//%' GROUP BY code),
             exact AS (SELECT code, min(description) AS description FROM ({exact_sql}) GROUP BY code),
             item AS (SELECT code_prefix, min(description) AS description FROM ({item_sql}) GROUP BY code_prefix)
        SELECT u.code,
               coalesce(x.description, d.description, i.description) AS description,
               CASE
                 WHEN regexp_matches(u.code, '^ICD(9|10)CM//') AND length(split_part(u.code, '//', 2)) > 3
                   THEN [split_part(u.code, '//', 1) || '//' || left(split_part(u.code, '//', 2), 3)]
                 WHEN regexp_matches(u.code, '^(LAB|CHART)//')
                   THEN [split_part(u.code, '//', 1) || '//' || split_part(u.code, '//', 2)]
                 ELSE []::VARCHAR[]
               END AS parent_codes
        FROM used u
        LEFT JOIN exact x ON x.code = u.code
        LEFT JOIN drg d ON d.code = u.code
        LEFT JOIN item i ON starts_with(u.code, i.code_prefix)
        ORDER BY u.code
    """).to_arrow_table()
    codes = codes.cast(meds.CodeMetadataSchema.schema())
    pq.write_table(codes, meta_dir / "codes.parquet")

    splits = con.sql("SELECT subject_id, split FROM subjects ORDER BY subject_id").to_arrow_table()
    pq.write_table(splits.cast(meds.SubjectSplitSchema.schema()), meta_dir / "subject_splits.parquet")

    dataset = {
        "dataset_name": name,
        "dataset_version": "unknown",
        "etl_name": "ehrscale.extract",  # the stage (a MEDS consumer reads it; unchanged since 0.1)
        "etl_version": __version__,
        "meds_version": getattr(meds, "__version__", "0.4"),
        "raw_source_id_columns": ["hadm_id"],
    }
    meds.DatasetMetadataSchema.validate(dataset)
    write_json(meta_dir / "dataset.json", dataset)
    write_json(meta_dir / "extract_summary.json", summary)


def extract(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, settings: ExtractSettings | None = None,
            name: str = "mimic-iv") -> dict:
    """Extract ``raw_dir`` (MIMIC-IV ``hosp/`` and ``icu/``) into a MEDS dataset at ``out_dir``."""
    settings = settings or ExtractSettings()
    settings.validate()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    check_writable(out_dir)  # before any work, not after it
    paths = locate_tables(raw_dir, settings.table_statuses())
    t_start = _time.perf_counter()
    try:
        with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix="ehrscale-duckdb-") as scratch:
            con = connect(Path(scratch) / "extract.duckdb", threads=settings.threads, memory_limit=settings.memory_limit,
                          temp_directory=scratch)
            con.execute("SET preserve_insertion_order = false")
            # admissions first: other tables' event queries join to it.
            order = sorted(paths, key=lambda n: (n not in ALWAYS_REQUIRED, list(TABLES).index(n)))
            summary: dict = {}
            for table_name in order:
                summary[table_name] = {"file": paths[table_name].name,
                                       **load_table(con, TABLES[table_name], paths[table_name],
                                                    settings.max_unparsable_fraction)}
            check_consistency(con, paths, settings.max_inconsistent_fraction, summary)
            subjects_per_split = assign_subjects(con, settings)
            roots = build_events(con, order, summary, Path(scratch) / "staged")
            orphans = sum(pq.ParquetFile(f).metadata.num_rows for root in roots
                          for f in root.glob(f"split={UNKNOWN_SUBJECT}/*/*.parquet"))
            if orphans:
                log.warning("%d event(s) belong to subjects absent from patients; dropped", orphans)
            rows = write_data(con, roots, tmp / "data")
            result = {
                "subjects": subjects_per_split,
                "events": rows,
                "orphan_events_dropped": int(orphans),
                "tables": summary,
                "seconds": round(_time.perf_counter() - t_start, 3),
            }
            write_metadata(con, tmp / "metadata", order, name, result)
            con.close()
    except duckdb.Error as err:
        raise duckdb_failure(err, f"extract {raw_dir}", settings.memory_limit) from err
    log.info("wrote %s: %s subjects, %s events in %.1fs", out_dir, subjects_per_split, rows, result["seconds"])
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raw_dir", type=Path, help="MIMIC-IV root holding hosp/ and icu/")
    parser.add_argument("out_dir", type=Path, help="MEDS dataset directory to write")
    parser.add_argument("--settings", default=None, help="extract settings as JSON (or @file.json)")
    parser.add_argument("--name", default="mimic-iv", help="dataset name for metadata/dataset.json")
    add_duckdb_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ExtractSettings, args.settings, "extract")
    apply_duckdb_arguments(settings, args)
    extract(args.raw_dir, args.out_dir, settings, name=args.name)
    return 0
