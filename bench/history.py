"""``probe.history``: recent vs whole, per cell and task: held-out AUROC, embedding cost, training cost.

For each cell of a finished run, every labelled example is embedded twice with ``ehrscale embed``'s
own code (:func:`ehrscale.probe.embed.embed_cell`, the default probe settings but ``history``):
``recent`` (the last context window before the prediction time) and ``whole`` (every earlier
window too, mean-pooled), and each is probed with :func:`ehrscale.probe.linear.probe_embeddings`.
Printed per cell and task: the held-out AUROC of both with its interval, their paired difference
(whole - recent, patients resampled once for both), and per cell the embedding cost of each mode
(CPU seconds of this process for ``embed_cell``, windows and tokens run through the model) beside
the cell's training cost: its own job (``job_wall_seconds``) plus, for a WSD cooldown, the stable
chain it branched from (the elapsed seconds recorded in ``stable/<size>/T*.pt`` at its
``branch_tokens``), else ``wall_seconds``.

Default cells: for the smallest, the middle and the largest budget of ``runs/*/metrics.json``, the
cell with the lowest ``val_loss``.

    .venv/bin/python bench/history.py [--run results/synthetic] [--cells C1p5e10_d14L2 ...] \\
        [--threads 1] [--settings '{"bootstrap": 1000}'] [--work DIR] [--json history.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as the probe rules run, before numpy
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODES = ("recent", "whole")


def run_metrics(run: Path) -> dict[str, dict]:
    """{cell: metrics.json} of every finished cell of the run."""
    out = {}
    for p in sorted((run / "runs").glob("*/metrics.json")):
        out[p.parent.name] = json.loads(p.read_text())
    if not out:
        raise SystemExit(f"no runs/*/metrics.json under {run}")
    return out


def default_cells(metrics: dict[str, dict]) -> list[str]:
    """The lowest-val_loss cell of the smallest, the middle and the largest budget."""
    budgets = sorted({float(m["budget"]) for m in metrics.values()})
    picks = []
    for b in dict.fromkeys([budgets[0], budgets[len(budgets) // 2], budgets[-1]]):
        cells = [c for c, m in metrics.items() if float(m["budget"]) == b and m.get("val_loss") is not None]
        picks.append(min(cells, key=lambda c: (float(metrics[c]["val_loss"]), c)))
    return picks


def training_seconds(run: Path, m: dict) -> tuple[float, str]:
    """(seconds, how): the cell's job plus the stable chain it branched from, else wall_seconds."""
    job, wall = m.get("job_wall_seconds"), float(m["wall_seconds"])
    if job is None:
        return wall, "wall_seconds"
    job = float(job)
    if wall - job <= 1e-6:  # the job ran its whole schedule itself (no branch state loaded)
        return job, "job (whole schedule)"
    branch = m.get("branch_tokens")
    for p in sorted((run / "stable" / str(m.get("size"))).glob("T*.pt")):
        st = torch.load(p, map_location="cpu", weights_only=False).get("state", {})
        if branch is not None and int(st.get("tokens", -1)) == int(branch):
            return job + float(st["elapsed"]), f"job {job:.1f} + stable {float(st['elapsed']):.1f}"
    return wall, "wall_seconds (stable state not found)"


def read_held_out(path):
    """A probe's held-out predictions (MEDS evaluation layout), times as int64 µs."""
    import pyarrow.parquet as pq

    df = pq.read_table(path).to_pandas()
    df["prediction_time"] = df["prediction_time"].to_numpy().astype("datetime64[us]").astype(np.int64)
    return df


def paired_difference(pred_a, pred_b, settings) -> dict:
    """AUROC(whole) - AUROC(recent) on the same held-out examples, patients resampled once for both."""
    from ehrscale.probe.metrics import paired_auroc_difference

    keys = ["subject_id", "prediction_time"]
    both = pred_a[keys + ["boolean_value", "predicted_boolean_probability"]].merge(
        pred_b[keys + ["predicted_boolean_probability"]], on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    kw = {"n_boot": settings.bootstrap, "seed": settings.seed, "level": settings.ci_level}
    if "groups" in inspect.signature(paired_auroc_difference).parameters:
        kw["groups"] = both["subject_id"].to_numpy()
    return paired_auroc_difference(both["boolean_value"].to_numpy(bool), both["predicted_boolean_probability_a"].to_numpy(),
                                   both["predicted_boolean_probability_b"].to_numpy(), **kw)


def bench_cell(run: Path, cell: str, labels: dict, settings_json: dict, work: Path) -> dict:
    from ehrscale.probe.embed import embed_cell
    from ehrscale.probe.linear import probe_embeddings
    from ehrscale.probe.settings import ProbeSettings

    row: dict = {"cell": cell, "modes": {}, "tasks": {}}
    records = {}
    for mode in MODES:
        settings = ProbeSettings(**(settings_json | {"history": mode}))
        npz = work / cell / f"{mode}.npz"
        cpu0, wall0 = time.process_time(), time.perf_counter()
        meta = embed_cell(run / "runs" / cell / "model.pt", run / "tokens", labels, npz, settings)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        row["modes"][mode] = {
            "embed_cpu_s": round(cpu, 2), "embed_wall_s": round(wall, 2),
            "windows": meta["n_windows"] + meta.get("n_history_windows", 0),
            "tokens": meta["n_tokens"] + meta.get("n_history_tokens", 0),
            "padded_tokens": meta["n_padded_tokens"] + meta.get("n_history_padded_tokens", 0),
            "earlier_windows": meta.get("n_history_windows", 0), "examples": meta["n_examples"],
            "embedded": meta["n_embedded"]}
        cpu0 = time.process_time()
        records[mode] = probe_embeddings(npz, work / cell / mode, settings)["tasks"]
        row["modes"][mode]["probe_cpu_s"] = round(time.process_time() - cpu0, 2)
    settings = ProbeSettings(**settings_json)
    for task in records["recent"]:
        rec = {m: records[m][task] for m in MODES}
        if any(r["status"] != "ok" for r in rec.values()):
            row["tasks"][task] = {"status": "skipped", "reason": next(r.get("reason") for r in rec.values() if r["status"] != "ok")}
            continue
        t = {m: {k: rec[m]["held_out"]["auroc"].get(k) for k in ("estimate", "lo", "hi")} for m in MODES}
        pred = {m: read_held_out(work / cell / m / f"{task}.predictions.parquet") for m in MODES}
        t["difference"] = paired_difference(pred["recent"], pred["whole"], settings)
        t["n_held_out"] = int(rec["recent"]["held_out"]["n"]["estimate"])
        row["tasks"][task] = t
    return row


def fmt_ci(r: dict, sign: str = "") -> str:
    if r.get("lo") is None:
        return f"{r['estimate']:{sign}.3f}"
    return f"{r['estimate']:{sign}.3f} [{r['lo']:{sign}.3f}, {r['hi']:{sign}.3f}]"


def print_tables(rows: list[dict]) -> None:
    print("\nheld-out AUROC (95% interval); difference = whole - recent, paired patient bootstrap")
    print(f"{'cell':<16} {'task':<22} {'recent':<24} {'whole':<24} {'whole - recent':<26} beyond")
    for r in rows:
        for task, t in r["tasks"].items():
            if t.get("status") == "skipped":
                print(f"{r['cell']:<16} {task:<22} skipped: {t['reason']}")
                continue
            d = t["difference"]
            beyond = "+" if d.get("lo", -1) > 0 else ("-" if d.get("hi", 1) < 0 else "no")
            print(f"{r['cell']:<16} {task:<22} {fmt_ci(t['recent']):<24} {fmt_ci(t['whole']):<24} {fmt_ci(d, '+'):<26} {beyond}")
    print("\ncost: embedding (CPU s of embed_cell, windows and tokens through the model) vs training the cell")
    print(f"{'cell':<16} {'mode':<7} {'embed CPU s':>11} {'wall s':>7} {'windows':>9} {'tokens':>11} {'x recent':>9} "
          f"{'probe CPU s':>11} {'train s':>8} {'embed/train':>11}  training from")
    for r in rows:
        base = r["modes"]["recent"]
        for mode in MODES:
            m = r["modes"][mode]
            print(f"{r['cell']:<16} {mode:<7} {m['embed_cpu_s']:>11.1f} {m['embed_wall_s']:>7.1f} {m['windows']:>9,} "
                  f"{m['tokens']:>11,} {m['embed_cpu_s'] / max(base['embed_cpu_s'], 1e-9):>8.2f}x {m['probe_cpu_s']:>11.1f} "
                  f"{r['train_s']:>8.1f} {m['embed_cpu_s'] / max(r['train_s'], 1e-9):>11.2f}  {r['train_from']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="results/synthetic", help="a finished run: runs/, tokens/, labels/ (and stable/)")
    ap.add_argument("--cells", nargs="+", help="cells to compare (default: best of smallest, middle, largest budget)")
    ap.add_argument("--settings", default="{}", help="probe settings (JSON) over the defaults; history is set here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--work", help="directory for the embeddings and probes (default: a temporary one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    run = Path(args.run)
    metrics = run_metrics(run)
    cells = args.cells or default_cells(metrics)
    unknown = [c for c in cells if c not in metrics]
    if unknown:
        raise SystemExit(f"not a finished cell of {run}: {unknown}")
    labels = {p.stem: p for p in sorted((run / "labels").glob("*.parquet"))}
    settings_json = json.loads(args.settings)
    settings_json.pop("history", None)
    print(f"run {run}; cells {cells}; tasks {list(labels)}; threads {args.threads}; settings over defaults {settings_json}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="history-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        for cell in cells:
            row = bench_cell(run, cell, labels, settings_json, work)
            row["train_s"], row["train_from"] = training_seconds(run, metrics[cell])
            row |= {"budget": metrics[cell]["budget"], "val_loss": metrics[cell]["val_loss"],
                    "wall_seconds": metrics[cell]["wall_seconds"]}
            rows.append(row)
            print(f"{cell}: recent {row['modes']['recent']['embed_cpu_s']:.1f} CPU s, whole "
                  f"{row['modes']['whole']['embed_cpu_s']:.1f} CPU s", flush=True)
    print_tables(rows)
    diffs = np.array([t["difference"]["estimate"] for r in rows for t in r["tasks"].values() if "difference" in t])
    if len(diffs):
        print(f"\nmean AUROC difference (whole - recent) over {len(diffs)} cell-tasks: {diffs.mean():+.4f}; "
              f"beyond the interval: {sum(t['difference'].get('lo', -1) > 0 for r in rows for t in r['tasks'].values() if 'difference' in t)} up, "
              f"{sum(t['difference'].get('hi', 1) < 0 for r in rows for t in r['tasks'].values() if 'difference' in t)} down")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run), "cells": rows}, indent=1))


if __name__ == "__main__":
    main()
