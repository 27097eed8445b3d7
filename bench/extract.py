"""Benchmark: extraction against DuckDB's bare scan of the same CSVs, in the same run.

The cohort is either the synthetic generator's (``--source synth``) or the real demo
replicated with shifted subject/admission ids (``--source demo``). For each repeat it
times (a) the bare scan, ``CREATE TABLE AS SELECT * FROM read_csv(file)`` of every table
extraction reads, and (b) ``ehrscale extract`` in a subprocess, whose peak RSS it reads.
It prints medians, events/s, the ratio to the bare scan, and peak RSS.

    python bench/extract.py --patients 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "data" / "mimic-iv-demo"
ID_COLUMNS = ("subject_id", "hadm_id")


def replicate_demo(dst: Path, copies: int) -> None:
    """Write ``copies`` copies of every demo table, shifting subject and admission ids."""
    con = duckdb.connect()
    for src in sorted(DEMO.glob("*/*.csv.gz")):
        out = dst / src.parent.name / src.name
        out.parent.mkdir(parents=True, exist_ok=True)
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_csv('{src}', all_varchar=true)").fetchall()]
        shifted = [c for c in ID_COLUMNS if c in columns]
        if not shifted:
            con.execute(f"COPY (SELECT * FROM read_csv('{src}', all_varchar=true)) TO '{out}' (HEADER, COMPRESSION gzip)")
            continue
        replace = ", ".join(
            f"CAST(TRY_CAST({c} AS BIGINT) + k * 1000000000 AS VARCHAR) AS {c}" for c in shifted
        )
        con.execute(
            f"COPY (SELECT * EXCLUDE (k) REPLACE ({replace}) FROM read_csv('{src}', all_varchar=true), "
            f"range({copies}) r(k) ORDER BY k) TO '{out}' (HEADER, COMPRESSION gzip)"
        )


def make_cohort(source: str, patients: int, workdir: Path) -> Path:
    raw = workdir / f"raw-{source}-{patients}"
    if raw.exists():
        return raw
    tmp = workdir / f".tmp-{source}-{patients}"
    if source == "synth":
        subprocess.run([sys.executable, "-m", "ehrscale", "synth", str(tmp), "--patients", str(patients), "--seed", "0"],
                       check=True)
    else:
        replicate_demo(tmp, max(1, patients // 100))
    tmp.rename(raw)
    return raw


def bare_scan(raw: Path, tables: list[str]) -> float:
    con = duckdb.connect()
    t0 = time.perf_counter()
    for name in tables:
        path = next(raw.glob(f"*/{name}.csv*"))
        con.execute(f"CREATE OR REPLACE TEMP TABLE scan AS SELECT * FROM read_csv('{path}')")
    return time.perf_counter() - t0


def timed_extract(raw: Path, out: Path) -> tuple[float, float, dict]:
    code = (
        "import json, resource, sys, time; from ehrscale.extract.raw import extract; "
        "t = time.perf_counter(); r = extract(sys.argv[1], sys.argv[2]); "
        "print('RESULT', json.dumps({'seconds': time.perf_counter() - t, 'result': r, "
        "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(raw), str(out)], check=True, capture_output=True, text=True)
    report = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])
    return report["seconds"], report["rss_mb"], report["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--source", choices=["synth", "demo"], default="synth")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ehrscale-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = make_cohort(args.source, args.patients, args.workdir)
    scans, runs, rss = [], [], []
    result: dict = {}
    for i in range(args.repeats):  # interleaved, so drift hits both alike
        seconds, rss_mb, result = timed_extract(raw, args.workdir / f"meds-{i}")
        tables = [t for t, v in result["tables"].items() if "events" in v or t.startswith("d_")]
        scans.append(bare_scan(raw, tables))
        runs.append(seconds)
        rss.append(rss_mb)
        subprocess.run(["rm", "-rf", str(args.workdir / f"meds-{i}")], check=True)
    events = sum(result["events"].values())
    rows = sum(v["source_rows"] for v in result["tables"].values())
    scan, run = statistics.median(scans), statistics.median(runs)
    print(f"cohort: {args.source}, {sum(result['subjects'].values())} patients, {rows:,} source rows, "
          f"{events:,} events; {args.repeats} repeats, medians")
    print(f"bare DuckDB scan : {scan:7.2f} s   ({rows / scan:,.0f} rows/s)")
    print(f"ehrscale extract : {run:7.2f} s   ({events / run:,.0f} events/s)")
    print(f"ratio extract/scan: {run / scan:.2f}x   (target <= 3x)")
    print(f"peak RSS extract : {max(rss):.0f} MB")
    print(f"self peak RSS    : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (bench process, scan)")


if __name__ == "__main__":
    main()
