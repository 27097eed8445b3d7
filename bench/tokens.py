"""Benchmark ``ehrscale tokenize``: tokens/s and peak RSS on a cohort of >= 20,000 patients.

The cohort is the MIMIC-IV demo (extracted with ``ehrscale extract``) replicated with shifted
subject_ids, ``--shard-patients`` patients per parquet shard, each replica keeping its original
split. Tokenization runs in a fresh child process that reports its own peak RSS; running two
cohort sizes (``--small`` and ``--patients``) shows that memory does not grow with the cohort.

    .venv/bin/python bench/tokens.py                      # 20,000 patients (+ 5,000 for the RSS check)
    .venv/bin/python bench/tokens.py --patients 40000 --small 10000 --workdir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "data" / "mimic-iv-demo"
SHIFT = 10**9  # subject_id offset between replicas (MIMIC ids are < 2e7)


def build_cohort(demo_meds: Path, out: Path, n_patients: int, shard_patients: int) -> dict:
    """Replicate the demo MEDS dataset to ``n_patients`` subjects, shard by shard."""
    splits = {}
    for split in ("train", "tuning", "held_out"):
        files = sorted((demo_meds / "data" / split).glob("*.parquet"))
        splits[split] = pa.concat_tables([pq.read_table(f) for f in files])
    n_demo = sum(len(pc.unique(t["subject_id"])) for t in splits.values())
    replicas = -(-n_patients // n_demo)
    per_shard = max(1, shard_patients // n_demo)
    n_rows = 0
    for split, table in splits.items():
        d = out / "data" / split
        d.mkdir(parents=True, exist_ok=True)
        sid = table["subject_id"]
        for k, r0 in enumerate(range(0, replicas, per_shard)):
            parts = [table.set_column(0, "subject_id", pc.add(sid, pa.scalar(r * SHIFT, pa.int64())))
                     for r in range(r0, min(replicas, r0 + per_shard))]
            shard = pa.concat_tables(parts)
            pq.write_table(shard, d / f"{k}.parquet", row_group_size=1 << 20)
            n_rows += shard.num_rows
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    return {"patients": replicas * n_demo, "events": n_rows, "replicas": replicas}


_CHILD = (
    "import resource, sys\n"
    "from ehrscale.cli import main\n"
    "rc = main(['tokenize', sys.argv[1], sys.argv[2]])\n"
    "ru = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print('MAXRSS_KIB', ru.ru_maxrss, 'CPU_S', ru.ru_utime + ru.ru_stime, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_tokenize(meds: Path, tokens: Path) -> dict:
    """``ehrscale tokenize`` in a fresh child process; wall time and that process's own peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(meds), str(tokens)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"tokenize failed:\n{proc.stderr}")
    tail = proc.stderr.rsplit("MAXRSS_KIB", 1)[1].split()
    peak_kib, cpu_s = int(tail[0]), float(tail[2])
    stats = json.loads((tokens / "stats.json").read_text())
    n_tok = sum(s["n_tokens"] for s in stats["splits"].values())
    return {"wall_s": wall, "tokens": n_tok, "tokens_per_s": n_tok / wall, "peak_rss_mib": peak_kib / 1024,
            "cpu_s": cpu_s, "tokens_per_cpu_s": n_tok / cpu_s, "load_avg_1m": os.getloadavg()[0],
            "vocab_size": stats["vocab_size"]}


def encode_only(meds: Path, tokens: Path) -> dict:
    """Throughput of the shard encoder alone (vocab already fitted, no disk writes)."""
    sys.path.insert(0, str(ROOT / "src"))
    from ehrscale.tokens.encode import COLUMNS, CodeTable, encode_table
    from ehrscale.tokens.vocab import Vocab

    vocab = Vocab.load(tokens)
    codes = CodeTable(vocab)
    n, t_enc, t_read = 0, 0.0, 0.0
    for f in sorted((meds / "data" / "train").glob("*.parquet")):
        t0 = time.perf_counter()
        table = pq.read_table(f, columns=COLUMNS)
        t1 = time.perf_counter()
        e = encode_table(table, vocab, codes)
        t_enc += time.perf_counter() - t1
        t_read += t1 - t0
        n += len(e.tokens)
    return {"tokens": n, "encode_s": t_enc, "read_s": t_read, "encode_tokens_per_s": n / t_enc,
            "read_plus_encode_tokens_per_s": n / (t_enc + t_read)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=20_000)
    ap.add_argument("--small", type=int, default=5_000, help="second, smaller cohort for the memory check (0: skip)")
    ap.add_argument("--shard-patients", type=int, default=1_000)
    ap.add_argument("--workdir", default=None, help="keep data here (default: a temp dir, removed)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ehrscale-bench-") as tmp:
        work = Path(args.workdir or tmp)
        demo_meds = work / "demo_meds"
        if not (demo_meds / "data").exists():
            subprocess.run([sys.executable, "-m", "ehrscale", "extract", str(DEMO), str(demo_meds)], check=True, cwd=ROOT,
                           capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        results = {"cpu_count": os.cpu_count()}
        for label, n in (("small", args.small), ("full", args.patients)):
            if n <= 0:
                continue
            meds = work / f"meds_{n}"
            t0 = time.perf_counter()
            info = build_cohort(demo_meds, meds, n, args.shard_patients)
            info["build_s"] = time.perf_counter() - t0
            res = run_tokenize(meds, work / f"tokens_{n}")
            res.update(info)
            if label == "full":
                res["encode_only"] = encode_only(meds, work / f"tokens_{n}")
            results[label] = res
            print(f"[{label}] {info['patients']:,} patients, {info['events']:,} events -> {res['tokens']:,} tokens "
                  f"in {res['wall_s']:.1f}s = {res['tokens_per_s'] / 1e6:.2f}M tokens/s end to end "
                  f"({res['tokens_per_cpu_s'] / 1e6:.2f}M per CPU-second, load {res['load_avg_1m']:.1f}); "
                  f"peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
            if label == "full":
                eo = res["encode_only"]
                print(f"[{label}] encoder alone {eo['encode_tokens_per_s'] / 1e6:.2f}M tokens/s; "
                      f"parquet read + encode {eo['read_plus_encode_tokens_per_s'] / 1e6:.2f}M tokens/s", flush=True)
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
