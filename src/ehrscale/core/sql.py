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


def check_memory_limit(value: str, key: str) -> None:
    if not _MEMORY.fullmatch(str(value)):
        raise EhrscaleError(f"{key} must look like '2GB', got {value!r}")


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
