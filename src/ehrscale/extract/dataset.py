"""The MEDS contract, in one place: the schema ehrscale writes, the layout, shard listing and validation.

Every reader of MEDS data (tokenize, labels) lists shards with :func:`split_shards`; extract
(:mod:`ehrscale.extract.raw`) and import (:mod:`ehrscale.extract.meds_import`) write :data:`DATA_SCHEMA`
in this layout; :func:`validate_meds` checks any MEDS dataset against the ``meds`` package's schemas.

ehrscale's layout (what extract writes and import produces)::

    MEDS/data/<split>/<k>.parquet          split in train | tuning | held_out; a subject in one shard,
                                           rows sorted by (subject_id, time), null times first
    MEDS/metadata/{dataset.json, codes.parquet, subject_splits.parquet}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import meds
import pyarrow as pa
import pyarrow.parquet as pq

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.sql import connect, quote, quote_list
from ehrscale.extract.splits import SPLITS

log = logging.getLogger(__name__)

# What ehrscale writes: meds.DataSchema's columns and types, subject_id and code never null, and MIMIC's
# admission id (a raw-source column MEDS allows). Extraction and import both write exactly this.
DATA_SCHEMA = pa.schema([
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("time", pa.timestamp("us")),
    pa.field("code", pa.string(), nullable=False),
    pa.field("numeric_value", pa.float32()),
    pa.field("text_value", pa.large_string()),
    pa.field("hadm_id", pa.int64()),
])
DATA_COLUMNS = tuple(meds.DataSchema.schema().names)
# The columns a shard must have, with the arrow types meds.DataSchema requires (or castable to them).
REQUIRED_TYPES = {
    "subject_id": (pa.types.is_integer, "int64"),
    "time": (pa.types.is_timestamp, "timestamp[us]"),
    "code": (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t), "string"),
    "numeric_value": (pa.types.is_floating, "float32"),
}


# Rows per parquet row group, counted over the whole stream of shards (a group also ends with its shard):
# DuckDB's 60 vectors of 2048 rows, the cut that ehrscale's shards have always had.
ROW_GROUP = 122_880


def stage_by_shard(con, select_sql: str, staged: Path) -> int:
    """Write ``select_sql``'s rows (first columns ``split`` and ``shard``) under ``staged/split=<s>/shard=<k>/``
    as compressed parquet, in one streaming pass; returns the row count. A shard is then sorted alone."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    # DuckDB buffers rows per open shard: flush them a row group at a time, not in 512k-row blocks,
    # so that even a small memory limit holds a buffer for every shard.
    con.execute(f"SET partitioned_write_flush_threshold = {ROW_GROUP}")
    return int(con.execute(f"COPY ({select_sql}) TO {quote(staged)} "
                           "(FORMAT parquet, PARTITION_BY (split, shard), COMPRESSION zstd)").fetchone()[0])


def staged_shards(roots: list[Path]) -> dict[tuple[str, int], list[Path]]:
    """The files of each (split, shard) staged under any of ``roots``, by split name then shard number."""
    out: dict[tuple[str, int], list[Path]] = {}
    for root in roots:
        for d in root.glob("split=*/shard=*"):
            key = (d.parent.name.split("=", 1)[1], int(d.name.split("=", 1)[1]))
            out.setdefault(key, []).extend(sorted(d.glob("*.parquet")))
    return dict(sorted(out.items()))


def write_shards(con, roots: list[Path], columns: str, order_by: str, data_dir: Path) -> dict[str, int]:
    """Each staged (split, shard) of ``roots``, sorted by ``order_by``, to ``data_dir/<split>/<shard>.parquet``
    in :data:`DATA_SCHEMA` (``columns`` selects its columns); returns rows per split. Splits other than
    SPLITS (e.g. events of unknown subjects) are skipped.

    DuckDB sorts one shard at a time under its memory limit (spilling past it), and Python holds one
    row group: memory and scratch disk follow the shard, not the cohort."""
    rows_per_split = dict.fromkeys(SPLITS, 0)
    written = 0
    for (split, shard), files in staged_shards(roots).items():
        if split not in SPLITS:
            continue
        path = data_dir / split / f"{shard}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        reader = con.sql(f"SELECT {columns} FROM read_parquet({quote_list(files)}) ORDER BY {order_by}"
                         ).to_arrow_reader(ROW_GROUP)
        before = written
        with pq.ParquetWriter(path, DATA_SCHEMA) as writer:
            pending, filled = [], written % ROW_GROUP  # rows of the current row group, counted over all shards
            for batch in reader:
                while batch.num_rows:
                    piece = batch.slice(0, ROW_GROUP - filled)
                    pending.append(piece)
                    filled += piece.num_rows
                    batch = batch.slice(piece.num_rows)
                    if filled == ROW_GROUP:
                        written += _write_group(writer, pending)
                        pending, filled = [], 0
            if pending:
                written += _write_group(writer, pending)
        rows_per_split[split] += written - before
    return rows_per_split


def _write_group(writer: pq.ParquetWriter, batches: list[pa.RecordBatch]) -> int:
    table = pa.Table.from_batches(batches).cast(DATA_SCHEMA)
    writer.write_table(table, row_group_size=table.num_rows)
    return table.num_rows


def split_shards(meds_dir: str | Path) -> dict[str, list[Path]]:
    """The parquet shards of each split of ehrscale's layout, in name order; raises if the dir is missing."""
    meds_dir = Path(meds_dir)
    data = meds_dir / "data"
    if not meds_dir.is_dir():
        raise EhrscaleError(f"MEDS directory not found: {meds_dir}")
    if not data.is_dir():
        raise EhrscaleError(f"MEDS directory has no data/ folder: {data}")
    return {s: sorted((data / s).rglob("*.parquet")) if (data / s).is_dir() else [] for s in SPLITS}


def all_shards(meds_dir: str | Path) -> list[Path]:
    """Every data shard of any MEDS dataset (``data/**/*.parquet``), in path order."""
    data = Path(meds_dir) / "data"
    if not Path(meds_dir).is_dir():
        raise EhrscaleError(f"MEDS directory not found: {meds_dir}")
    if not data.is_dir():
        raise EhrscaleError(f"MEDS directory has no data/ folder: {data}")
    shards = sorted(data.rglob("*.parquet"))
    if not shards:
        raise EhrscaleError(f"empty cohort: no parquet shards under {data}")
    return shards


def check_shard_schema(shard: Path) -> pa.Schema:
    """The shard's schema, after checking the MEDS columns exist with meds.DataSchema's types."""
    try:
        schema = pq.read_schema(shard)
    except (pa.ArrowInvalid, OSError) as err:
        raise EhrscaleError(f"cannot read MEDS shard {shard}: {err}") from err
    for col, (ok, want) in REQUIRED_TYPES.items():
        if col not in schema.names:
            raise EhrscaleError(f"MEDS shard {shard}: missing column '{col}' (MEDS requires {want})")
        if not ok(schema.field(col).type):
            raise EhrscaleError(f"MEDS shard {shard}: column '{col}' has type {schema.field(col).type}, "
                                f"MEDS requires {want}")
    return schema


def check_shard_rows(shard: Path, con) -> None:
    """Rows sorted by (subject_id, time) with null times first, and no null subject_id or code."""
    src = f"read_parquet({quote_list([shard])})"
    bad = con.execute(
        f"SELECT count(*) FILTER (WHERE subject_id IS NULL), count(*) FILTER (WHERE code IS NULL) FROM {src}"
    ).fetchone()
    for col, n in zip(("subject_id", "code"), bad):
        if n:
            raise EhrscaleError(f"MEDS shard {shard}: column '{col}' has {n} null value(s)")
    row = con.execute(
        f"SELECT file_row_number, subject_id, time FROM (SELECT file_row_number, subject_id, time, "
        "lag(subject_id) OVER w AS ps, lag(time) OVER w AS pt, lag(time IS NULL) OVER w AS pn "
        f"FROM read_parquet({quote_list([shard])}, file_row_number = true) "
        "WINDOW w AS (ORDER BY file_row_number)) "
        "WHERE subject_id < ps OR (subject_id = ps AND ((time IS NULL AND NOT pn) OR time < pt)) "
        "ORDER BY file_row_number LIMIT 1"
    ).fetchone()
    if row is not None:
        raise EhrscaleError(f"MEDS shard {shard}: rows are not sorted by (subject_id, time) at row {row[0]} "
                            f"(subject_id {row[1]}, time {row[2]}); columns 'subject_id', 'time'")


def read_subject_splits(meds_dir: str | Path) -> pa.Table | None:
    """``metadata/subject_splits.parquet`` validated with meds.SubjectSplitSchema; None if absent.

    A subject listed in two splits is an error."""
    path = Path(meds_dir) / "metadata" / "subject_splits.parquet"
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
        table = table.select(["subject_id", "split"]).cast(meds.SubjectSplitSchema.schema())
        meds.SubjectSplitSchema.validate(table)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, OSError, ValueError, TypeError) as err:
        raise EhrscaleError(f"{path}: not a MEDS subject split table (columns 'subject_id' int64, "
                            f"'split' string): {err}") from err
    sids = table.column("subject_id").to_numpy()
    splits = table.column("split").to_pylist()
    seen: dict[int, str] = {}
    for sid, split in zip(sids.tolist(), splits):
        if seen.setdefault(sid, split) != split:
            raise EhrscaleError(f"{path}: subject {sid} is in two splits ({seen[sid]!r} and {split!r}); "
                                "column 'split'")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise EhrscaleError(f"{path}: unknown split name(s) {unknown} in column 'split'; ehrscale uses {list(SPLITS)}")
    return table


def read_dataset_metadata(meds_dir: str | Path) -> dict:
    meta = Path(meds_dir) / "metadata"
    if not meta.is_dir():
        raise EhrscaleError(f"MEDS dataset {meds_dir} has no metadata/ folder (MEDS requires metadata/dataset.json)")
    path = meta / "dataset.json"
    if not path.is_file():
        raise EhrscaleError(f"MEDS dataset {meds_dir}: missing {path}")
    try:
        data = json.loads(path.read_text())
        meds.DatasetMetadataSchema.validate(data)
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise EhrscaleError(f"{path}: not MEDS dataset metadata: {err}") from err
    return data


def validate_meds(meds_dir: str | Path) -> dict:
    """Check a MEDS dataset against the meds schemas; returns a summary. Raises EhrscaleError naming
    the shard (or metadata file) and the column at the first problem."""
    import duckdb

    meds_dir = Path(meds_dir)
    shards = all_shards(meds_dir)
    dataset = read_dataset_metadata(meds_dir)
    splits = read_subject_splits(meds_dir)
    con = connect(threads=2)
    try:
        for shard in shards:
            check_shard_schema(shard)
            check_shard_rows(shard, con)
        # a subject's events in one shard only
        rows = con.execute(
            f"SELECT subject_id, list(DISTINCT filename) FROM read_parquet({quote_list(shards)}, filename = true, "
            "union_by_name = true) GROUP BY subject_id HAVING count(DISTINCT filename) > 1 LIMIT 1"
        ).fetchall()
        if rows:
            raise EhrscaleError(f"MEDS dataset {meds_dir}: subject {rows[0][0]} spans several shards {rows[0][1]}; "
                                "column 'subject_id'")
        n_subjects, n_events = con.execute(
            f"SELECT count(DISTINCT subject_id), count(*) FROM read_parquet({quote_list(shards)}, union_by_name = true)"
        ).fetchone()
    except duckdb.Error as err:
        raise EhrscaleError(f"cannot read MEDS data under {meds_dir}: {err}") from err
    finally:
        con.close()
    if splits is not None:
        # a subject whose shard sits under data/<split>/ must be in that split
        by_sid = dict(zip(splits.column("subject_id").to_pylist(), splits.column("split").to_pylist()))
        for shard in shards:
            rel = shard.relative_to(meds_dir / "data").parts
            if len(rel) > 1 and rel[0] in SPLITS:
                sids = pq.read_table(shard, columns=["subject_id"]).column("subject_id").unique().to_pylist()
                for sid in sids:
                    if by_sid.get(sid, rel[0]) != rel[0]:
                        raise EhrscaleError(f"MEDS shard {shard}: subject {sid} is in split {by_sid[sid]!r} in "
                                            "metadata/subject_splits.parquet but its events are under "
                                            f"data/{rel[0]}/; column 'subject_id'")
    return {"dataset": dataset, "n_shards": len(shards), "n_subjects": int(n_subjects), "n_events": int(n_events),
            "has_splits": splits is not None}
