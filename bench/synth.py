"""Benchmark the synthetic cohort generator: patients/s, rows/s and peak RSS per cohort size.

    python bench/synth.py                      # 10k and 100k patients
    python bench/synth.py --sizes 1000,10000   # other sizes
    python bench/synth.py --density mimic --workers 2   # MIMIC-IV's event density, two processes

Each size runs in its own subprocess (so peak RSS is per size) and writes to a temporary
directory that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(n: int, seed: int, chunk_size: int | None, density: str, workers: int) -> dict:
    from ehrscale.synth import generate

    with tempfile.TemporaryDirectory(prefix="ehrscale-bench-synth-") as tmp:
        t0 = time.perf_counter()
        summary = generate(Path(tmp) / "cohort", n, seed=seed, chunk_size=chunk_size, density=density,
                           workers=workers)
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.csv.gz"))
    rows = sum(summary["rows"].values())
    return {"patients": n, "seconds": seconds, "patients_per_s": n / seconds, "rows": rows, "rows_per_s": rows / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "gz_mb": size / 2**20,
            "admissions": summary["admissions"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated cohort sizes (default 10000,100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, help="patients per chunk (default: the generator's)")
    ap.add_argument("--density", choices=("default", "mimic"), default="default")
    ap.add_argument("--workers", type=int, default=1, help="generator processes (default 1)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one, args.seed, args.chunk_size, args.density, args.workers)))
        return 0
    print(f"density {args.density}, {args.workers} worker(s)")
    print(f"{'patients':>9} {'seconds':>8} {'patients/s':>11} {'rows':>11} {'rows/s':>10} {'peak RSS MB':>12} "
          f"{'worker MB':>10} {'gz MB':>7}")
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--seed", str(args.seed),
                               *(["--chunk-size", str(args.chunk_size)] if args.chunk_size else []),
                               "--density", args.density,
                               "--workers", str(args.workers)], capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{r['patients']:>9} {r['seconds']:>8.1f} {r['patients_per_s']:>11.0f} {r['rows']:>11} "
              f"{r['rows_per_s']:>10.0f} {r['peak_rss_mb']:>12.0f} {r['worker_peak_rss_mb']:>10.0f} "
              f"{r['gz_mb']:>7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
