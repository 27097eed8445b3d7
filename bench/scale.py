"""The data stages at growing cohort sizes, up to full MIMIC-IV size: wall time, peak memory, growth (issue #26).

    .venv/bin/python bench/scale.py --sizes 3000,10000 --density mimic             # minutes
    .venv/bin/python bench/scale.py --sizes 30000,100000,300000 --density mimic \\
        --etl-venv /path/to/venv-with-mimic-iv-meds --etl-max 30000                 # the full-size step: hours

For each size it writes a synthetic cohort as gzipped CSV (``ehrscale synth``, seed 3), then runs each
data stage through its command with its rule's threads, DuckDB memory limit (3/4 of the rule's
``mem_mb``, as ``workflow/rules/common.smk`` gives it) and memory budget (``EHRSCALE_MEM_MB``):
``extract``, ``meds_import`` (on extract's output), ``tokenize``, ``labels`` for every task of
``config/tasks`` (one process per task, as the rule runs them), the probe inputs (every task's examples
and the windows that embed them) and the ``baseline`` of the task with the most examples. With ``--etl-venv``, the
official MIMIC_IV_MEDS ETL (``meds-extract-run``) runs on the same CSVs up to ``--etl-max`` patients;
the tables it reads that ehrscale's cohort lacks are given as stand-ins (the demo's header and first row,
times blanked, so no event) and mimic-code's concept maps as header-only files.

A sampler sums the anonymous memory (RSS less mapped file pages, which the kernel reclaims) of each
stage's whole process tree every 0.1 s: its peak is what a job's memory limit cannot take back; RSS is
printed beside it. Prints one row per (size, stage) beside the rule's declared ``mem_mb``, then
each stage's growth in time and memory from the smallest size to the largest. ``--json`` writes the
rows too. The cohorts live under ``--work`` (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import yaml

from ehrscale.core.memory import tree_memory

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"
TASKS = ROOT / "config" / "tasks"
DEMO = ROOT.parent / "shared" / "data" / "mimic-iv-demo"
CONTEXT_LENGTH = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["model"]["context_length"]  # headers for the tables the official ETL wants


def declared_mem_mb() -> dict[str, int]:
    """Each rule's ``mem_mb`` as the rule files declare it (the rules own the number; this only reads it)."""
    out = {}
    for path in RULES.glob("*.smk"):
        for name, body in re.findall(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), re.M):
            m = re.search(r"mem_mb=(\d+)", body)
            if m:
                out[name] = int(m.group(1))
    return out


def run_stage(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd``; its wall time and the peaks of its process tree's summed anonymous memory (what a job's
    memory limit cannot reclaim, and what ehrscale.core.memory guards) and RSS (plus mapped file pages),
    sampled every 0.1 s."""
    peak = peak_rss = 0
    done = threading.Event()
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

        def sample() -> None:
            nonlocal peak, peak_rss
            root = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    anon, rss = tree_memory(root)
                    peak, peak_rss = max(peak, anon), max(peak_rss, rss)
                except psutil.Error:
                    pass
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    if rc != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"scale: {' '.join(map(str, cmd[:3]))} failed (exit {rc}); log {log}:\n{tail}")
    return {"seconds": seconds, "peak_mb": peak / 2**20, "peak_rss_mb": peak_rss / 2**20}


def gz_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*.csv.gz")) / 2**20


CONCEPT_MAPS = ("d_labitems_to_loinc", "inputevents_to_rxnorm", "lab_itemid_to_loinc", "meas_chartevents_main",
                "meas_chartevents_value", "numerics-summary", "outputevents_to_loinc", "proc_datetimeevents",
                "proc_itemid", "waveforms-summary")
CONCEPT_MAP_HEADER = "itemid (omop_source_code),label,omop_concept_name,omop_vocabulary_id,omop_concept_code\n"


def etl_stubs(raw: Path) -> None:
    """Header-only stand-ins for what the official ETL reads and the synthetic cohort lacks: the demo's
    other tables, and mimic-code's concept maps (no download here; they only add parent codes)."""
    for name in CONCEPT_MAPS:
        (raw / f"{name}.csv").write_text(CONCEPT_MAP_HEADER)
    for src in DEMO.glob("*/*.csv.gz"):
        dst = raw / src.parent.name / src.name
        if dst.exists():
            continue
        # The demo's first row, as the first synthetic patient, its times blanked so that it makes no
        # event: a header alone would leave the ETL's join keys untyped (strings against integers).
        with gzip.open(src, "rt", newline="") as f:
            reader = csv.reader(f)
            header, row = next(reader), next(reader, None)
        with gzip.open(dst, "wt", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            if row is not None and "subject_id" in header:
                row = ["" if re.search("time|date", col) else v for col, v in zip(header, row)]
                row[header.index("subject_id")] = "10000000"
                writer.writerow(row)


def one_size(n: int, args, work: Path, mem: dict[str, int]) -> list[dict]:
    exe = Path(sys.executable).parent
    ehrscale = str(exe / "ehrscale")
    d = work / f"{args.density}-n{n}"
    synth_json = d / "synth.json"
    reuse = args.reuse and synth_json.exists()
    if not reuse:
        shutil.rmtree(d, ignore_errors=True)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    raw, meds, tokens, labels = d / "raw", d / "meds", d / "tokens", d / "labels"
    duck = {rule: f"{mem[rule] * 3 // 4}MB" for rule in ("extract", "meds_import", "tokenize")}
    rows = []

    def record(stage: str, rule: str | None, result: dict, **extra) -> None:
        row = {"patients": n, "stage": stage, "declared_mb": mem.get(rule) if rule else None, **result, **extra}
        rows.append(row)
        print(_fmt(row), flush=True)

    if reuse:  # the generator is deterministic: the same cohort, and its measurement when it was made
        made = json.loads(synth_json.read_text())
        if "peak_rss_mb" not in made:  # measured before anonymous memory was: its peak is RSS
            made = {**made, "peak_mb": float("nan"), "peak_rss_mb": made["peak_mb"]}
        record("synth", None, made, gz_mb=gz_mb(raw), reused=True)
    else:
        made = run_stage([ehrscale, "synth", str(raw), "--patients", str(n), "--seed", "3", "--density", args.density,
                          "--workers", str(args.workers)], d / "logs/synth.log")
        synth_json.write_text(json.dumps(made))
        record("synth", None, made, gz_mb=gz_mb(raw))
    if args.synth_only:
        return rows

    def stage(rule: str, *cmd, log: str | None = None) -> dict:
        """A stage's command under its rule's budget, as the workflow runs it (EHRSCALE_MEM_MB)."""
        env = dict(os.environ, EHRSCALE_MEM_MB=str(mem[rule])) if rule in mem else None
        return run_stage([ehrscale, *map(str, cmd)], d / "logs" / f"{log or rule}.log", env=env)

    def per_task(rule: str, make) -> dict:
        runs = [stage(rule, *make(t), log=f"{rule}-{t.stem}") for t in tasks]
        return {"seconds": sum(r["seconds"] for r in runs), "peak_mb": max(r["peak_mb"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}

    tasks = sorted(TASKS.glob("*.yaml"))
    threads = ("--threads", args.threads)
    record("extract", "extract", stage("extract", "extract", raw, meds, "--name", f"scale-{n}", *threads,
                                       "--memory-limit", duck["extract"]))
    record("meds_import", "meds_import", stage("meds_import", "meds-import", meds, d / "imported", *threads,
                                               "--memory-limit", duck["meds_import"]))
    shutil.rmtree(d / "imported", ignore_errors=True)
    record("tokenize", "tokenize", stage("tokenize", "tokenize", meds, tokens, *threads,
                                         "--memory-limit", duck["tokenize"]))
    record("labels", "labels", per_task("labels", lambda t: ("labels", meds, "--tasks", t, "--out",
                                                             labels / f"{t.stem}.parquet")), jobs=len(tasks))
    if args.etl_venv and n <= args.etl_max:
        etl_stubs(raw)
        env = dict(os.environ, PATH=f"{Path(args.etl_venv) / 'bin'}:{os.environ['PATH']}")
        record("official ETL", None, run_stage(
            [str(Path(args.etl_venv) / "bin" / "meds-extract-run"), "spec=MIMIC-IV", f"output_dir={d / 'etl'}",
             "do_download=false", f"input_dir={raw}", "dataset_key=demo"], d / "logs/etl.log", env=env))
    if "probe" in args.skip:
        return finish(rows, d, args)
    record("probe inputs", None, run_stage([sys.executable, str(Path(__file__)), "--probe-inputs", str(tokens),
                                            str(labels)], d / "logs" / "probe-inputs.log"))
    # The baseline of the task with the most examples: the others need less (and the time is its own).
    biggest = max(tasks, key=lambda t: pq.ParquetFile(labels / f"{t.stem}.parquet").metadata.num_rows)
    record("baseline", "baseline", stage("baseline", "baseline", "--tokens", tokens, "--labels",
                                         labels / f"{biggest.stem}.parquet", "--out", d / "baseline" / f"{biggest.stem}.json",
                                         "--context-length", CONTEXT_LENGTH, log=f"baseline-{biggest.stem}"),
           task=biggest.stem)
    return finish(rows, d, args)


def finish(rows: list[dict], d: Path, args) -> list[dict]:
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    elif args.reuse:  # the next run reuses the cohort only
        for sub in ("meds", "tokens", "labels", "baseline", "etl"):
            shutil.rmtree(d / sub, ignore_errors=True)
    return rows


def probe_inputs(tokens: Path, labels: Path) -> None:
    """What the embed jobs build before any model runs: every task's probe examples and the windows
    that embed them (:func:`ehrscale.probe.embed.plan_windows`), split by split."""
    from ehrscale.probe.embed import plan_windows
    from ehrscale.probe.examples import probe_examples
    from ehrscale.probe.settings import ProbeSettings
    from ehrscale.tokens.store import TokenSplit

    for path in sorted(labels.glob("*.parquet")):
        examples = probe_examples(path, tokens, ProbeSettings())
        for split, part in examples.groupby("split"):
            store = TokenSplit(tokens / split)
            part = part.assign(index=store.index_of(part["subject_id"].to_numpy()))
            _, windows = plan_windows(store, part, CONTEXT_LENGTH)
            print(f"{path.stem} {split}: {len(part)} examples, {len(windows)} windows", flush=True)


def _fmt(row: dict) -> str:
    declared = f"{row['declared_mb']:>8}" if row.get("declared_mb") else f"{'-':>8}"
    over = " OVER" if row.get("declared_mb") and row["peak_mb"] > row["declared_mb"] else ""
    extra = f"  ({row['gz_mb']:.0f} MB gz{', reused' if row.get('reused') else ''})" if "gz_mb" in row else ""
    return (f"{row['patients']:>8} {row['stage']:<13} {row['seconds']:>9.1f} {row['peak_mb']:>9.0f} "
            f"{row.get('peak_rss_mb', float('nan')):>9.0f} "
            f"{declared}{over}{extra}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="3000,10000", help="comma-separated cohort sizes (default 3000,10000)")
    ap.add_argument("--density", choices=("default", "mimic"), default="mimic")
    ap.add_argument("--workers", type=int, default=2, help="synth processes (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads for extract and tokenize (default 2)")
    ap.add_argument("--etl-venv", help="a virtual environment with mimic-iv-meds (meds-extract-run) installed")
    ap.add_argument("--etl-max", type=int, default=30000, help="largest cohort given to the official ETL")
    ap.add_argument("--work", help="directory for the cohorts (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep each size's files")
    ap.add_argument("--reuse", action="store_true",
                    help="with --work: take a cohort made earlier (and its synth figures) instead of making it again")
    ap.add_argument("--synth-only", action="store_true", help="only make the cohorts (for a later --reuse)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--skip", default="", help="'probe': skip the probe inputs and the baseline")
    ap.add_argument("--probe-inputs", nargs=2, metavar=("TOKENS", "LABELS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe_inputs:  # the probe-inputs stage, in its own process so that its memory is its own
        probe_inputs(*map(Path, args.probe_inputs))
        return 0
    sizes = sorted(int(x) for x in args.sizes.split(",") if x.strip())
    mem = declared_mem_mb()
    print(f"density {args.density}; DuckDB gets 3/4 of each rule's mem_mb; peak: the process tree's anonymous "
          "memory (what a memory limit counts); RSS adds mapped file pages (page cache)")
    print(f"{'patients':>8} {'stage':<13} {'seconds':>9} {'peak MB':>9} {'RSS MB':>9} {'mem_mb':>8}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ehrscale-scale-") as tmp:
        work = Path(args.work or tmp)
        for n in sizes:
            rows += one_size(n, args, work, mem)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\ngrowth from {lo} to {hi} patients ({hi / lo:.0f}x the patients):")
        for stage in dict.fromkeys(r["stage"] for r in rows):
            a = next((r for r in rows if r["stage"] == stage and r["patients"] == lo), None)
            b = next((r for r in rows if r["stage"] == stage and r["patients"] == hi), None)
            if a and b:
                print(f"  {stage:<13} time x{b['seconds'] / a['seconds']:.2f}   peak memory x{b['peak_mb'] / a['peak_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
