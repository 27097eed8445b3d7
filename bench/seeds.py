"""Seed spread: how far a cell's final loss moves with the seed, at several batch sizes.

Each of ``--cells`` of a finished run is retrained from scratch with each of ``--seeds``
(initialisation and data order) at each of ``--batch-sizes`` rows per step, at the run's
tuned LR for its size, all else from the run's config. A WSD cell trains its whole schedule
in one job, which is bit-identical on CPU to the workflow's chain and cooldown. Printed per
(cell, rows): the losses, their mean and range, and the mean loss per validation target
split by kind (value bins ``Q1``..``Q10``, time intervals, everything else), which shows
where a spread lives.

Why: the default config caps rows per step at 2 (``train.max_batch_size``). At 4 rows the
largest sizes' losses split by seed, by up to 0.09 nats, almost all of it on the value bins
(docs/wsd.md, "Rows per step and seven sizes per budget").

    .venv/bin/python bench/seeds.py --run results/synthetic \\
        [--cells C4p5e11_d48L2 C4p5e11_d64L2] [--seeds 0 1 2] [--batch-sizes 1 2 4] \\
        [--config config/config.yaml] [--workers 2] [--work DIR] [--out seeds.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import write_json

KINDS = ("value bin", "interval", "other")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished workflow run (results/<name>): tokens, tune/")
    p.add_argument("--config", default="config/config.yaml", help="the config that run was made with")
    p.add_argument("--cells", nargs="+", default=["C4p5e11_d48L2", "C4p5e11_d64L2"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4], help="rows per step")
    p.add_argument("--workers", type=int, default=2, help="training processes, one torch thread each")
    p.add_argument("--work", help="directory for the runs (default: a new temporary one); finished runs are kept")
    p.add_argument("--out", help="write the figures to this JSON")
    return p.parse_args(argv)


def _kind(token: str) -> str:
    from ehrscale.tokens.vocab import token_group

    group = token_group(token)
    return {"QUANTILE": "value bin", "INTERVAL": "interval"}.get(group, "other")


def loss_by_kind(model_file: Path, tokens_dir: Path, context_length: int, settings) -> dict[str, dict]:
    """Mean validation loss per target kind, on the fixed windows every cell is scored on."""
    import torch
    import torch.nn.functional as F

    from ehrscale.model.gpt import load_model
    from ehrscale.tokens.store import read_vocab_tokens
    from ehrscale.train.trainer import fixed_validation_batches

    kinds = [_kind(t) for t in read_vocab_tokens(tokens_dir)]
    kind_of = torch.tensor([KINDS.index(k) for k in kinds])
    model, _ = load_model(model_file)
    total, count = torch.zeros(len(KINDS), dtype=torch.float64), torch.zeros(len(KINDS), dtype=torch.float64)
    with torch.no_grad():
        for b in fixed_validation_batches(tokens_dir, context_length, settings):
            logits, _ = model(b.inputs, None, b.positions, b.segments)
            keep = b.targets.reshape(-1) >= 0
            target = b.targets.reshape(-1)[keep]
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1))[keep], target, reduction="none")
            k = kind_of[target]
            total.index_add_(0, k, loss.double())
            count.index_add_(0, k, torch.ones_like(loss, dtype=torch.float64))
    n = float(count.sum())
    return {name: {"share": float(count[i]) / n, "mean_loss": float(total[i] / count[i]) if count[i] else None}
            for i, name in enumerate(KINDS)}


def _job(tokens: str, out: str, cell, model, settings) -> dict:
    """Train one (cell, seed, rows) run, or keep a finished one of the same settings, and score it."""
    import torch

    from ehrscale.train.trainer import train_cell

    torch.set_num_threads(1)
    tokens, out = Path(tokens), Path(out)
    if not (out / "metrics.json").exists():  # a rerun with the same --work keeps finished runs
        assert train_cell(tokens, out, cell, model, settings) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"cell": cell.id, "tokens": cell.tokens, "seed": settings.seed, "batch_size": settings.batch_size,
                "learning_rate": settings.learning_rate, "schedule": settings.schedule}
    found = {k: metrics.get(k) for k in expected}
    if found != expected:
        raise SystemExit(f"{out} holds a run of other settings ({found} != {expected}); give a new --work")
    return {"cell": cell.id, "seed": settings.seed, "rows": settings.batch_size, "val_loss": metrics["val_loss"],
            "learning_rate": settings.learning_rate, "schedule": settings.schedule,
            "by_kind": loss_by_kind(out / "model.pt", tokens, model.context_length, settings)}


def plan_jobs(args, work: Path) -> list[tuple]:
    """(tokens, out, cell, model, settings) per run: the run's config and tuned LR, the seed and rows changed."""
    from ehrscale.core.config import load_config
    from ehrscale.core.settings import load_settings
    from ehrscale.model.config import ModelSettings
    from ehrscale.plan.grid import plan_from_config
    from ehrscale.plan.rules import TrainSettings
    from ehrscale.train.tune import read_tuned_lr

    run = Path(args.run)
    config = load_config(args.config)
    cells = {c.id: c for c in plan_from_config(config, run / "tokens")[0]}
    unknown = sorted(set(args.cells) - set(cells))
    if unknown:
        raise SystemExit(f"{unknown} are not cells of {args.config}'s grid; cells: {sorted(cells)}")
    model = load_settings(ModelSettings, config.get("model"), "model")
    base = dataclasses.replace(load_settings(TrainSettings, config.get("train"), "train"), threads=1,
                               progress_seconds=3600.0, checkpoint_minutes=1e9)
    jobs = []
    for cell_id in args.cells:
        cell = cells[cell_id]
        lr = read_tuned_lr(run / "tune" / "lr_rule.json", cell.size)
        for rows in args.batch_sizes:
            for seed in args.seeds:
                settings = dataclasses.replace(base, seed=seed, batch_size=rows, learning_rate=lr)
                jobs.append((str(run / "tokens"), str(work / f"{cell_id}_b{rows}_s{seed}"), cell, model, settings))
    return jobs


def summarise(runs: list[dict]) -> list[dict]:
    """Per (cell, rows): the seeds' losses, mean and range, and the mean loss per target kind."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["cell"], r["rows"]), []).append(r)
    out = []
    for (cell, rows), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        losses = [r["val_loss"] for r in rs]
        out.append({"cell": cell, "rows": rows, "seeds": [r["seed"] for r in rs],
                    "losses": losses, "mean": sum(losses) / len(losses), "range": max(losses) - min(losses),
                    "by_kind": {k: [r["by_kind"][k]["mean_loss"] for r in rs] for k in KINDS}})
    return out


def _fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="ehrscale-seeds-"))
    try:
        jobs = plan_jobs(args, work)
    except EhrscaleError as err:  # a missing run, token store or tune result
        raise SystemExit(f"bench/seeds.py: {err}") from None
    print(f"[seeds] {len(jobs)} runs in {args.workers} processes, work {work}", flush=True)
    # spawn, not fork: torch's thread pools do not survive a fork
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = {ex.submit(_job, *job): i for i, job in enumerate(jobs)}
        done = {}
        for future in as_completed(futures):
            r = done[futures[future]] = future.result()
            print(f"[seeds] {len(done)}/{len(jobs)} {r['cell']} rows {r['rows']} seed {r['seed']}: "
                  f"{r['val_loss']:.4f}", flush=True)
    runs = [done[i] for i in range(len(jobs))]  # job order, not finishing order: the same JSON every time
    rows = summarise(runs)
    print("\ncell            rows  seeds' losses              mean    range   value-bin loss by seed")
    for r in rows:
        print(f"{r['cell']:15s} {r['rows']:4d}  {' '.join(f'{x:.4f}' for x in r['losses']):26s} {r['mean']:.4f}  "
              f"{r['range']:.4f}  {' '.join(_fmt(x, 3) for x in r['by_kind']['value bin'])}")
    shares = runs[0]["by_kind"]
    print("validation targets: " + ", ".join(f"{k} {v['share']:.1%}" for k, v in shares.items())
          + " (a value bin's uniform guess is ln 10 = 2.303)")
    if args.out:
        write_json(args.out, {"settings": vars(args), "runs": runs, "summary": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
