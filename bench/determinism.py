"""Bit-identical CPU training across CPU types: which settings give it, and at what cost (issue #22, item 5).

One CPU type and thread count already give the same bits (docs/reproducibility.md); two CPU types
do not, because MKL, oneDNN and ATen's vectorised kernels pick code paths by instruction set, and each
path sums in its own order. No session has two CPU types, so this bench *emulates* an older CPU on
this one by capping each library's instruction set (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS,
ONEDNN_MAX_CPU_ISA), and trains the same cell in a fresh process under each profile:

* ``native``: the defaults (what ehrscale runs);
* ``capped``: the native settings on an emulated AVX2-only CPU;
* ``pinned``: MKL's conditional numerical reproducibility (MKL_CBWR=COMPATIBLE) with ATen and oneDNN
  held to their baseline kernels, the candidate setting for cross-CPU identity;
* ``pinned+capped``: the same on the emulated AVX2 CPU.

It prints each run's validation loss, a hash of its weights and its throughput, then which runs are
bit-identical and what the pinned setting costs in tokens/s against native (the same run, the same
machine, interleaved repeats). Emulation covers instruction-set dispatch, not a different
microarchitecture's MKL code path choices, so a match here is necessary, not proof.

    .venv/bin/python bench/determinism.py [--sizes d24L2 d64L2] [--budget 3e10] [--repeats 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CAP = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PIN = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}
PROFILES = {"native": {}, "capped": CAP, "pinned": PIN, "pinned+capped": CAP | PIN}
LADDER = {"d24L2": {"n_layer": 2, "d_model": 24, "n_head": 2}, "d64L2": {"n_layer": 2, "d_model": 64, "n_head": 4}}
BUDGET = {"d24L2": 3e10, "d64L2": 1.6e11}  # each size's smallest budget with the default run's 300 steps


def worker(args) -> None:
    """Train one cell in this process (its environment is the profile) and print its result as JSON."""
    import torch

    from ehrscale.model.config import ModelSettings
    from ehrscale.plan.grid import GridSettings, plan_cells
    from ehrscale.plan.rules import TrainSettings
    from ehrscale.tokens.store import read_stats
    from ehrscale.train.trainer import train_cell

    torch.set_num_threads(1)
    model = ModelSettings(context_length=256)
    train = TrainSettings(threads=1, val_windows=64, learning_rate=0.01, min_steps=300, max_batch_size=2,
                          progress_seconds=3600.0, checkpoint_minutes=1e9)  # the default run's step floor and rows
    stats = read_stats(args.tokens)
    grid = GridSettings(budgets=[args.budget], min_tokens_per_param=0, max_tokens_per_param=1e9, max_epochs=1e9)
    cells, dropped = plan_cells({args.size: LADDER[args.size]}, grid, int(stats["vocab_size"]), model.context_length,
                                None, model, train)
    if not cells:
        sys.exit(f"{args.size} at {args.budget:g} FLOPs is dropped: {dropped[0][1]}")
    out = Path(args.out)
    if train_cell(args.tokens, out, cells[0], model, train, stats) != 0:
        sys.exit("training was interrupted")
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode()), digest.update(state[name].numpy().tobytes())
    metrics = json.loads((out / "metrics.json").read_text())
    print(json.dumps({"val_loss": metrics["val_loss"], "weights": digest.hexdigest()[:16],
                      "tokens_per_second": metrics["tokens_per_second"], "cpu": torch.backends.cpu.get_cpu_capability()}))


def run_profile(tokens: Path, work: Path, size: str, budget: float, profile: str, repeat: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CAP | PIN} | PROFILES[profile]
    out = work / f"{size}_{profile}_{repeat}"
    proc = subprocess.run([sys.executable, __file__, "--worker", "--tokens", str(tokens), "--out", str(out),
                           "--size", size, "--budget", str(budget)], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"determinism: {size} under {profile} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(LADDER), choices=list(LADDER))
    p.add_argument("--budget", type=float, help="FLOPs of the cell trained (default: per size, "
                   + ", ".join(f"{k} {v:g}" for k, v in BUDGET.items()) + ")")
    p.add_argument("--repeats", type=int, default=2, help="runs of each profile, interleaved (throughput is their median)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tokens", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from ehrscale.tokens.toy import write_synthetic_tokens

    work = Path(tempfile.mkdtemp(prefix="ehrscale-determinism-"))
    tokens = write_synthetic_tokens(work / "tokens", vocab_size=512, n_subjects={"train": 400, "tuning": 40, "held_out": 4},
                                    mean_length=600, seed=0)
    print(f"{'size':<7} {'profile':<14} {'val_loss':<20} {'weights':<17} {'tokens/s':>9}  kernels")
    for size in args.sizes:
        runs = {name: [] for name in PROFILES}
        for r in range(args.repeats):
            for name in PROFILES:
                runs[name].append(run_profile(tokens, work, size, args.budget or BUDGET[size], name, r))
                x = runs[name][-1]
                print(f"{size:<7} {name:<14} {x['val_loss']!r:<20} {x['weights']:<17} {x['tokens_per_second']:>9.0f}  {x['cpu']}")
        first = {name: rs[0] for name, rs in runs.items()}
        same = lambda a, b: first[a]["weights"] == first[b]["weights"] and first[a]["val_loss"] == first[b]["val_loss"]  # noqa: E731
        repeatable = all(len({x["weights"] for x in rs}) == 1 for rs in runs.values())
        tps = {name: statistics.median(x["tokens_per_second"] for x in rs) for name, rs in runs.items()}
        print(f"{size}: each profile repeats itself bit for bit: {'yes' if repeatable else 'no'}; "
              f"native = capped: {'yes' if same('native', 'capped') else 'no'}; "
              f"pinned = pinned+capped: {'yes' if same('pinned', 'pinned+capped') else 'no'}; "
              f"pinned trains at {100 * tps['pinned'] / tps['native']:.0f} % of native's tokens/s "
              f"({tps['pinned']:.0f} against {tps['native']:.0f})")


if __name__ == "__main__":
    main()
