"""``ehrscale meds-import SRC DST``: any MEDS dataset, validated, in ehrscale's MEDS layout.

The source is validated with the ``meds`` package's schemas (:func:`ehrscale.extract.dataset.validate_meds`;
meds 0.3/0.4: ``data/**.parquet``, ``metadata/{codes,subject_splits}.parquet``, ``metadata/dataset.json``).
Import keeps the MEDS columns and ``hadm_id`` as int64 when the source has one (MIMIC_IV_MEDS writes it
as a string; null when absent), drops the other extra columns, and writes exactly
:data:`ehrscale.extract.dataset.DATA_SCHEMA`. The dataset's own splits are used when it has
``metadata/subject_splits.parquet``; otherwise ehrscale's keyed hash assigns them
(:func:`ehrscale.extract.splits.assign_splits`) with the configured fractions and salt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import duckdb
import meds
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_dir, check_writable
from ehrscale.core.settings import load_settings
from ehrscale.core.sql import add_duckdb_arguments, apply_duckdb_arguments, connect, duckdb_failure, quote_list
from ehrscale.extract.dataset import all_shards, read_subject_splits, stage_by_shard, validate_meds, write_shards
from ehrscale.extract.settings import ExtractSettings
from ehrscale.extract.splits import SPLITS, assign_shards, assign_splits, check_fractions


def import_meds(src: str | Path, dst: str | Path, settings: ExtractSettings | None = None) -> dict:
    """Validate the MEDS dataset ``src`` and write it in ehrscale's layout to ``dst`` (atomically).
    ``settings``: its split fractions and salt assign splits when the dataset has none."""
    settings = settings or ExtractSettings()
    src, dst = Path(src), Path(dst)
    fractions = check_fractions(settings.split_fractions)
    check_writable(dst)
    summary = validate_meds(src)
    shards = all_shards(src)
    names = set().union(*(pq.read_schema(s).names for s in shards))
    splits = read_subject_splits(src)
    scratch = tempfile.mkdtemp(prefix="ehrscale-duckdb-")  # where DuckDB's sort spills
    con = connect(threads=settings.threads, memory_limit=settings.memory_limit, temp_directory=scratch)
    try:
        sids = np.array([r[0] for r in con.execute(
            f"SELECT DISTINCT subject_id FROM read_parquet({quote_list(shards)}, union_by_name = true) ORDER BY 1"
        ).fetchall()], np.int64)
        if splits is None:
            split_of = pa.table({"subject_id": pa.array(sids, pa.int64()),
                                 "split": pa.array(assign_splits(sids, fractions, settings.split_salt).tolist(), pa.string())})
        else:
            split_of = splits
            missing = np.setdiff1d(sids, split_of.column("subject_id").to_numpy())
            if missing.size:
                raise EhrscaleError(f"{src}/metadata/subject_splits.parquet: {missing.size} subject(s) with events "
                                    f"have no split (e.g. {missing[:3].tolist()}); column 'subject_id'")
        split_of = split_of.select(["subject_id", "split"])
        con.register("split_of", split_of.append_column("shard", pa.array(assign_shards(
            split_of.column("subject_id").to_numpy(), split_of.column("split").to_pylist(), settings.subjects_per_shard))))
        hadm = "TRY_CAST(hadm_id AS BIGINT)" if "hadm_id" in names else "NULL::BIGINT"
        text = "text_value::VARCHAR" if "text_value" in names else "NULL::VARCHAR"
        with atomic_dir(dst) as tmp:
            staged = Path(scratch) / "staged"
            stage_by_shard(con, (
                f"SELECT s.split, s.shard, e.subject_id::BIGINT AS subject_id, e.time::TIMESTAMP AS time, "
                f"e.code::VARCHAR AS code, e.numeric_value::FLOAT AS numeric_value, {text} AS text_value, "
                f"{hadm} AS hadm_id, e.filename AS source_file, e.file_row_number AS source_row "
                f"FROM read_parquet({quote_list(shards)}, union_by_name = true, filename = true, "
                "file_row_number = true) e JOIN split_of s USING (subject_id)"
            ), staged)
            write_shards(con, [staged], "subject_id, time, code, numeric_value, text_value, hadm_id",
                         "subject_id, time NULLS FIRST, source_file, source_row", tmp / "data")
            for split in SPLITS:
                (tmp / "data" / split).mkdir(parents=True, exist_ok=True)
                for shard in sorted((tmp / "data" / split).glob("*.parquet")):
                    meds.DataSchema.validate(pq.read_schema(shard).empty_table())
            meta = tmp / "metadata"
            meta.mkdir()
            shutil.copyfile(src / "metadata" / "dataset.json", meta / "dataset.json")
            codes = src / "metadata" / "codes.parquet"
            if codes.exists():
                shutil.copyfile(codes, meta / "codes.parquet")
            pq.write_table(split_of.select(["subject_id", "split"]).cast(meds.SubjectSplitSchema.schema()),
                           meta / "subject_splits.parquet")
    except duckdb.Error as err:
        raise duckdb_failure(err, f"cannot import MEDS data from {src}", settings.memory_limit) from err
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    counts = {s: int(sum(1 for x in split_of.column("split").to_pylist() if x == s)) for s in SPLITS}
    summary.update({"splits_from": "dataset" if splits is not None else "keyed hash", "subjects_per_split": counts,
                    "has_hadm_id": "hadm_id" in names})
    summary.pop("dataset", None)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="a MEDS dataset root (data/**.parquet, metadata/)")
    parser.add_argument("dst", help="output: the dataset in ehrscale's layout (written atomically)")
    parser.add_argument("--settings", default=None,
                        help="the extract section as JSON or @file.json (its split_fractions and split_salt assign "
                             "splits when the dataset has no subject_splits.parquet)")
    add_duckdb_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ExtractSettings, args.settings, "extract")
    apply_duckdb_arguments(settings, args)
    summary = import_meds(args.src, args.dst, settings)
    print(json.dumps(summary))
    return 0
