"""DuckDB for the data stages: SQL literals, connections and the CLI flags that size them.

The workflow passes each data job's threads and memory (``--threads``, ``--memory-limit``), so
changing them reruns nothing; a stage's settings keep defaults for direct use.
"""

from __future__ import annotations

import os
import re

from ehrscale.core.errors import EhrscaleError

_MEMORY = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")


def quote(value: str | os.PathLike) -> str:
    """A SQL string literal: ``it's`` -> ``'it''s'``."""
    return "'" + str(value).replace("'", "''") + "'"


def quote_list(values) -> str:
    """A DuckDB list of string literals, e.g. the parquet files of ``read_parquet``."""
    return "[" + ", ".join(quote(v) for v in values) + "]"


_UNIT_BYTES = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def check_memory_limit(value: str, key: str) -> None:
    if not _MEMORY.fullmatch(str(value)):
        raise EhrscaleError(f"{key} must look like '2GB', got {value!r}")


def parse_memory(value: str) -> int:
    """Bytes in a DuckDB memory size such as '3000MB' or '2GiB' (DuckDB's units: MB = 1000^2)."""
    m = _MEMORY.fullmatch(str(value))
    if not m:
        raise EhrscaleError(f"a memory size must look like '2GB', got {value!r}")
    return int(float(str(value)[: m.start(2)].strip()) * _UNIT_BYTES[m.group(2)])


def connect(database: str = ":memory:", *, threads: int | None = None, memory_limit: str | None = None,
            temp_directory: str | os.PathLike | None = None):
    """A DuckDB connection with these limits (None: DuckDB's default) and no progress bar:
    each stage logs its own progress."""
    import duckdb  # here: the DAG and the training jobs import ehrscale without needing DuckDB

    con = duckdb.connect(str(database))
    con.execute("SET enable_progress_bar = false")
    if memory_limit:
        con.execute(f"SET memory_limit = {quote(memory_limit)}")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = {quote(temp_directory)}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def duckdb_failure(err: Exception, what: str, memory_limit: str | None) -> EhrscaleError:
    """A DuckDB error as a clear one: running out of its memory limit says which limit and how to raise it."""
    import duckdb

    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, duckdb.OutOfMemoryException):
        return EhrscaleError(f"{what}: DuckDB needed more than its memory limit {memory_limit} ({first}). Give the job "
                             "more memory (the rule's mem_mb: DuckDB gets 3/4 of it) or use smaller shards "
                             "(extract.subjects_per_shard)")
    return EhrscaleError(f"{what}: {first}")


def add_duckdb_arguments(parser) -> None:
    """--threads and --memory-limit for a DuckDB stage; the workflow passes a job's threads and memory."""
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (overrides settings)")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory limit, e.g. 4GB (overrides settings)")


def apply_duckdb_arguments(settings, args) -> None:
    """Copy --threads / --memory-limit onto a settings object with ``threads`` and ``memory_limit``."""
    if args.threads is not None:
        settings.threads = args.threads
    if args.memory_limit is not None:
        settings.memory_limit = args.memory_limit
