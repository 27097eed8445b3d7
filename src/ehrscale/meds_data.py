"""The MEDS contract, in one place: layout, shard listing, validation and import of any MEDS dataset.

Every reader of MEDS data (tokenize, labels) lists shards with :func:`split_shards`; extract writes
this layout; ``ehrscale meds-import SRC DST`` (:func:`import_meds`) brings a foreign MEDS dataset
(meds 0.3/0.4: ``data/**.parquet``, ``metadata/{codes,subject_splits}.parquet``,
``metadata/dataset.json``) into it after validating it with the ``meds`` package's schemas.

ehrscale's layout (what extract writes and import produces)::

    MEDS/data/<split>/<k>.parquet          split in train | tuning | held_out; a subject in one shard,
                                           rows sorted by (subject_id, time), null times first
    MEDS/metadata/{dataset.json, codes.parquet, subject_splits.parquet}

Import keeps the MEDS columns (``subject_id, time, code, numeric_value, text_value``) and
``hadm_id`` as int64 when the source has one (MIMIC_IV_MEDS writes it as a string; null when
absent), and drops the other extra columns. The dataset's own splits are used when it has
``metadata/subject_splits.parquet``; otherwise ehrscale's keyed hash assigns them
(:func:`ehrscale.splits.assign_splits`), with the configured fractions and salt. Splits other than
train/tuning/held_out (e.g. MEDS's ``train/0``-style sharding keeps these names) are an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import meds
import pyarrow as pa
import pyarrow.parquet as pq

from ehrscale.errors import EhrscaleError
from ehrscale.io import atomic_dir, check_writable
from ehrscale.splits import DEFAULT_FRACTIONS, SPLITS, assign_splits, check_fractions

log = logging.getLogger(__name__)

DATA_COLUMNS = ("subject_id", "time", "code", "numeric_value", "text_value")
# The columns a shard must have, with the arrow types meds.DataSchema requires (or castable to them).
REQUIRED_TYPES = {
    "subject_id": (pa.types.is_integer, "int64"),
    "time": (pa.types.is_timestamp, "timestamp[us]"),
    "code": (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t), "string"),
    "numeric_value": (pa.types.is_floating, "float32"),
}


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


def _sql_list(paths) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


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
    src = f"read_parquet({_sql_list([shard])})"
    bad = con.execute(
        f"SELECT count(*) FILTER (WHERE subject_id IS NULL), count(*) FILTER (WHERE code IS NULL) FROM {src}"
    ).fetchone()
    for col, n in zip(("subject_id", "code"), bad):
        if n:
            raise EhrscaleError(f"MEDS shard {shard}: column '{col}' has {n} null value(s)")
    row = con.execute(
        f"SELECT file_row_number, subject_id, time FROM (SELECT file_row_number, subject_id, time, "
        "lag(subject_id) OVER w AS ps, lag(time) OVER w AS pt, lag(time IS NULL) OVER w AS pn "
        f"FROM read_parquet({_sql_list([shard])}, file_row_number = true) "
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
    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        for shard in shards:
            check_shard_schema(shard)
            check_shard_rows(shard, con)
        # a subject's events in one shard only
        rows = con.execute(
            f"SELECT subject_id, list(DISTINCT filename) FROM read_parquet({_sql_list(shards)}, filename = true, "
            "union_by_name = true) GROUP BY subject_id HAVING count(DISTINCT filename) > 1 LIMIT 1"
        ).fetchall()
        if rows:
            raise EhrscaleError(f"MEDS dataset {meds_dir}: subject {rows[0][0]} spans several shards {rows[0][1]}; "
                                "column 'subject_id'")
        n_subjects, n_events = con.execute(
            f"SELECT count(DISTINCT subject_id), count(*) FROM read_parquet({_sql_list(shards)}, union_by_name = true)"
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


def import_meds(src: str | Path, dst: str | Path, fractions: dict | None = None, salt: str = "ehrscale",
                threads: int = 2) -> dict:
    """Validate the MEDS dataset ``src`` and write it in ehrscale's layout to ``dst`` (atomically)."""
    import duckdb
    import numpy as np

    src, dst = Path(src), Path(dst)
    fractions = check_fractions(fractions or DEFAULT_FRACTIONS)
    check_writable(dst)
    summary = validate_meds(src)
    shards = all_shards(src)
    names = set().union(*(pq.read_schema(s).names for s in shards))
    splits = read_subject_splits(src)
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        sids = np.array([r[0] for r in con.execute(
            f"SELECT DISTINCT subject_id FROM read_parquet({_sql_list(shards)}, union_by_name = true) ORDER BY 1"
        ).fetchall()], np.int64)
        if splits is None:
            split_of = pa.table({"subject_id": pa.array(sids, pa.int64()),
                                 "split": pa.array(assign_splits(sids, fractions, salt).tolist(), pa.string())})
        else:
            split_of = splits
            missing = np.setdiff1d(sids, split_of.column("subject_id").to_numpy())
            if missing.size:
                raise EhrscaleError(f"{src}/metadata/subject_splits.parquet: {missing.size} subject(s) with events "
                                    f"have no split (e.g. {missing[:3].tolist()}); column 'subject_id'")
        con.register("split_of", split_of)
        hadm = "TRY_CAST(hadm_id AS BIGINT)" if "hadm_id" in names else "NULL::BIGINT"
        text = "text_value::VARCHAR" if "text_value" in names else "NULL::VARCHAR"
        with atomic_dir(dst) as tmp:
            for split in SPLITS:
                (tmp / "data" / split).mkdir(parents=True)
                out = tmp / "data" / split / "0.parquet"
                con.execute(
                    f"COPY (SELECT e.subject_id::BIGINT AS subject_id, e.time::TIMESTAMP AS time, "
                    f"e.code::VARCHAR AS code, e.numeric_value::FLOAT AS numeric_value, {text} AS text_value, "
                    f"{hadm} AS hadm_id "
                    f"FROM read_parquet({_sql_list(shards)}, union_by_name = true, filename = true, "
                    "file_row_number = true) e JOIN split_of s USING (subject_id) "
                    f"WHERE s.split = '{split}' "
                    "ORDER BY e.subject_id, e.time NULLS FIRST, e.filename, e.file_row_number) "
                    f"TO '{str(out).replace(chr(39), chr(39) * 2)}' (FORMAT parquet)"
                )
            meta = tmp / "metadata"
            meta.mkdir()
            shutil.copyfile(src / "metadata" / "dataset.json", meta / "dataset.json")
            codes = src / "metadata" / "codes.parquet"
            if codes.exists():
                shutil.copyfile(codes, meta / "codes.parquet")
            pq.write_table(split_of.select(["subject_id", "split"]).cast(meds.SubjectSplitSchema.schema()),
                           meta / "subject_splits.parquet")
            for shard in sum(split_shards(tmp).values(), []):  # exactly meds.DataSchema's types
                table = pq.read_table(shard)
                schema = pa.schema([meds.DataSchema.schema().field(c) for c in DATA_COLUMNS] +
                                   [pa.field("hadm_id", pa.int64())])
                table = table.cast(schema)
                meds.DataSchema.validate(table)
                pq.write_table(table, shard)
    except duckdb.Error as err:
        raise EhrscaleError(f"cannot import MEDS data from {src}: {err}") from err
    finally:
        con.close()
    counts = {s: int(sum(1 for x in split_of.column("split").to_pylist() if x == s)) for s in SPLITS}
    summary.update({"splits_from": "dataset" if splits is not None else "keyed hash", "subjects_per_split": counts,
                    "has_hadm_id": "hadm_id" in names})
    summary.pop("dataset", None)
    return summary


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="a MEDS dataset root (data/**.parquet, metadata/)")
    parser.add_argument("dst", help="output: the dataset in ehrscale's layout (written atomically)")
    parser.add_argument("--settings", default=None,
                        help="JSON object of the extract settings (split_fractions, split_salt used when the "
                             "dataset has no subject_splits.parquet)")
    parser.add_argument("--threads", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    raw = json.loads(args.settings) if args.settings else {}
    if not isinstance(raw, dict):
        raise EhrscaleError("--settings must be a JSON object")
    summary = import_meds(args.src, args.dst, raw.get("split_fractions"), raw.get("split_salt", "ehrscale"),
                          args.threads)
    print(json.dumps(summary))
    return 0
