"""Data stages under memory limits smaller than their in-memory working set: they complete, with output
identical to an unlimited run; past the job's budget, a stage stops with a clear error and writes nothing.

Peaks are the kernel's own (each stage's VmHWM), not samples."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from ehrscale.core.memory import tree_memory
from ehrscale.synth import generate

N = 2500  # at mimic density: ~4.6M train rows in one shard


@pytest.fixture(scope="module")
def meds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budget")
    generate(root / "raw", N, seed=4, chunk_size=250, density="mimic", workers=2)
    _run("extract", root / "raw", root / "meds", "--memory-limit", "4GB")
    return root / "meds"


# The stage reports its own high-water mark (VmHWM) at exit: ru_maxrss from wait4 would also count
# the forking pytest process, which Linux carries across exec.
_PEAK = ("import atexit, runpy, sys; sys.argv = ['ehrscale', *sys.argv[1:]]; atexit.register(lambda: "
         "sys.stderr.write('VmHWM_KB ' + open('/proc/self/status').read().split('VmHWM:')[1].split()[0] + '\\n')); "
         "runpy.run_module('ehrscale', run_name='__main__')")


def _run(*args, env: dict | None = None, check: bool = True) -> tuple[int, str, float]:
    """Run ``ehrscale ARGS``: (exit code, stderr, the process's own peak RSS in MB)."""
    out = subprocess.run([sys.executable, "-c", _PEAK, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    peaks = [int(line.split()[1]) for line in out.stderr.splitlines() if line.startswith("VmHWM_KB ")]
    return out.returncode, out.stderr, peaks[-1] / 1024 if peaks else float("nan")


def _digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def test_extract_under_a_small_duckdb_limit_writes_the_same_meds(meds, tmp_path):
    raw = meds.parent / "raw"
    *_, unlimited_mb = _run("extract", raw, tmp_path / "unlimited", "--memory-limit", "4GB", "--threads", "2")
    *_, limited_mb = _run("extract", raw, tmp_path / "small", "--memory-limit", "150MB", "--threads", "2")
    assert unlimited_mb > limited_mb + 150  # DuckDB held more than 150 MB when it could
    skip = ("extract_summary.json",)  # its wall-time field
    assert _digest(tmp_path / "small", skip) == _digest(tmp_path / "unlimited", skip) == _digest(meds, skip)


def test_tokenize_within_a_budget_below_its_working_set(meds, tmp_path):
    """The whole shard at once peaks above the budget; a chunk of subjects at a time, with DuckDB limited
    so that exact quantiles take several batches, stays under it, with the guard on, and writes
    exactly the unlimited run's tokens."""
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (meds / "data" / "train").glob("*.parquet"))
    assert rows > 4_000_000
    whole = tmp_path / "whole"
    *_, whole_mb = _run("tokenize", meds, whole, "--settings", json.dumps({"chunk_rows": rows}), "--memory-limit", "4GB")
    budget = int(whole_mb) - 30
    bounded = tmp_path / "bounded"
    _, stderr, bounded_mb = _run("tokenize", meds, bounded, "--settings", json.dumps({"chunk_rows": 100_000}),
                                 "--memory-limit", "64MB", env={"EHRSCALE_MEM_MB": str(budget)})
    assert bounded_mb < 0.95 * budget < whole_mb, (bounded_mb, budget, whole_mb)
    assert stderr.count("quantile edges: batch") > 1  # exact quantiles, a batch of items at a time
    assert _digest(bounded, skip=("stats.json",)) == _digest(whole, skip=("stats.json",))
    stats = [json.loads((d / "stats.json").read_text()) for d in (bounded, whole)]
    for s in stats:
        s.pop("settings")
    assert stats[0] == stats[1]


def test_past_its_budget_a_stage_stops_with_a_clear_error_and_writes_nothing(meds, tmp_path):
    code, stderr, _ = _run("tokenize", meds, tmp_path / "t", env={"EHRSCALE_MEM_MB": "60"}, check=False)
    assert code == 3, stderr[-2000:]
    assert "over 95% of its memory budget of 60 MB (EHRSCALE_MEM_MB, the rule's mem_mb)" in stderr
    assert "Traceback" not in stderr
    assert not list(tmp_path.iterdir())  # no output, no temporary directory left behind


def test_the_guard_counts_memory_the_kernel_cannot_reclaim(tmp_path):
    """Pages of a memory-mapped file (the token store) are page cache: RSS, not anonymous memory."""
    path = tmp_path / "big.bin"
    path.write_bytes(np.ones(200 * 2**20, np.uint8).tobytes())
    me = psutil.Process()
    anon0, rss0 = tree_memory(me)
    mapped = np.memmap(path, np.uint8, "r")
    assert int(mapped.sum()) == 200 * 2**20  # touches every page
    anon1, rss1 = tree_memory(me)
    assert rss1 - rss0 > 150 * 2**20 and anon1 - anon0 < 50 * 2**20
    owned = np.ones(200 * 2**20, np.uint8)
    assert tree_memory(me)[0] - anon1 > 150 * 2**20 and owned.all()


def test_a_bad_budget_is_a_clear_error(meds, tmp_path):
    code, stderr, _ = _run("tokenize", meds, tmp_path / "t", env={"EHRSCALE_MEM_MB": "lots"}, check=False)
    assert code == 2 and "EHRSCALE_MEM_MB must be a positive whole number" in stderr
