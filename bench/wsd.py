"""WSD vs cosine on one IsoFLOPs grid: final losses, fitted exponents, tokens trained (issue 12, item 3).

Every cell of a grid of centred sizes (``grid.centre``) is trained twice with the same
settings but the schedule:

* ``cosine``: ``train_cell`` from scratch, one job per cell;
* ``wsd``: what the workflow does, each size's stable chain of ``train_stable`` segments
  ending at its cells' branch points, then each cell a cooldown from its branch state
  (``train_cell(..., branch=...)``).

Jobs run in ``--workers`` processes (one torch thread each). Reported: each cell's final
validation loss both ways and the relative difference ``wsd / cosine - 1`` (target: within
2 % on average), the worst cell; tokens actually trained both ways (summed from the branch
states and metrics, not planned) and their ratio; a and b fitted with ``ehrscale fit``'s
own code (``ehrscale.fit.loss.fit_points``: Approach 2 and Approach 3) on each schedule's cells,
and whether WSD's estimates fall inside cosine's 95 % intervals; and, from the planner
alone, the WSD / independent token ratio on the default 7-budget ladder
(``3e10 x 30 ** (j / 6)``, j = 0..6, the same centre; target <= 60 %).

    .venv/bin/python bench/wsd.py [--tokens results/synthetic/tokens] [--budgets 3e10 9e10 2.7e11] \\
        [--workers 2] [--min-steps 1000] [--val-windows 256] [--work DIR] [--out wsd.json]
    .venv/bin/python bench/wsd.py --smoke [--out wsd.json]   # a tiny synthetic store: seconds

**Twin mode** (``--run results/synthetic [--config config/config.yaml] [--budgets ...]``): the WSD
side is a finished workflow run itself (its cooldowns' metrics, its stable states' token
counts), and only the cosine twins are trained: each of the run's cells (at ``--budgets``,
default all) from scratch with the run's own settings (the config's ``train`` section, the
size's tuned LR from ``tune/lr_rule.json``, its batch), the schedule alone changed. The bench
checks that each twin's LR and batch equal the run's. With ``--cosine-lr-multipliers``, cosine
gets its own LR as the workflow gives WSD its own: each size's smallest cell (the workflow's
``tune`` cell) is swept under cosine at these multiples of the run's tuned LR, and the twins
train at the best (Hägele et al. 2024 compare each schedule at its tuned LR: with less time at
the peak, cosine's best LR is higher).

The fits here skip the calibration and robustness refits (``calibration_sims=0``,
``backtest=False``); their estimates and intervals are the same as ``ehrscale fit``'s at
the same bootstrap counts and seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

LADDER_START = 3e10


def ladder(start: float) -> list[float]:
    """7 budgets evenly spaced in log C over 30x."""
    return [start * 30 ** (j / 6) for j in range(7)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", default="results/synthetic/tokens", help="token store (read only)")
    p.add_argument("--budgets", type=float, nargs="+", default=[3e10, 9e10, 2.7e11], help="FLOP budgets of the grid")
    p.add_argument("--centre-params", type=float, default=3e4, help="grid.centre.params: predicted N_opt at --centre-budget")
    p.add_argument("--centre-budget", type=float, default=1e12)
    p.add_argument("--exponent", type=float, default=0.5, help="grid.centre.exponent (prior a)")
    p.add_argument("--per-budget", type=int, default=6)
    p.add_argument("--spacing", type=float, default=1.5)
    p.add_argument("--context", type=int, default=256, help="model.context_length")
    p.add_argument("--min-steps", type=int, default=1000, help="train.min_steps (the batch rule and the step-minimum drop)")
    p.add_argument("--batch-tokens-per-param", type=float, default=10.0, help="train.batch_tokens_per_param (batch rule)")
    p.add_argument("--val-windows", type=int, default=256)
    p.add_argument("--lr-base", type=float, default=3e-3, help="train.lr_base: the width rule's peak LR at width 64")
    p.add_argument("--cooldown-fraction", type=float, default=0.2)
    p.add_argument("--workers", type=int, help="training processes, one torch thread each (default 2; --smoke: 1)")
    p.add_argument("--ladder-start", type=float, default=LADDER_START,
                   help="the planner-only ladder: 7 budgets from this, spanning 30x (default: the default run's)")
    p.add_argument("--fit-bootstrap", type=int, default=1000, help="bootstrap resamples of Approach 2 and 3")
    p.add_argument("--fit-starts", type=int, default=16, help="fit.n_starts of the Epoch-style cross-check (not a or b)")
    p.add_argument("--work", help="directory for the runs and branch states (default: a new temporary one); "
                   "rerunning with the same settings and --work keeps what is done and resumes killed jobs")
    p.add_argument("--out", help="write the figures to this JSON")
    p.add_argument("--smoke", action="store_true", help="a tiny synthetic token store and grid: seconds, for the tests")
    p.add_argument("--run", help="twin mode: a finished workflow run (results/<name>); train only cosine twins of its cells")
    p.add_argument("--config", default="config/config.yaml", help="twin mode: the config that run was made with")
    p.add_argument("--cosine-lr-multipliers", type=float, nargs="+",
                   help="twin mode: sweep cosine's LR at these multiples of the run's tuned LR (default: the run's LR)")
    args = p.parse_args(argv)
    if args.run and "--budgets" not in (argv if argv is not None else sys.argv[1:]):
        args.budgets = None  # twin mode: every budget of the run
    if args.smoke:  # 3 sizes (an IsoFLOPs parabola needs 3) at 3 budgets, 10 to 100 steps each
        args.budgets, args.centre_params, args.centre_budget, args.per_budget, args.spacing = [3e7, 6e7, 1.2e8], 1.2e3, 6e7, 3, 2.0
        args.context, args.min_steps, args.batch_tokens_per_param, args.val_windows = 64, 10, 1.0, 8
        args.fit_bootstrap, args.fit_starts, args.ladder_start = 20, 1, 3e7
    if args.workers is None:
        args.workers = 1 if args.smoke else 2
    return args


# ---------------------------------------------------------------------------- jobs (run in worker processes)


def _cosine_job(tokens, out, cell, model, settings) -> dict:
    return _cell_job(tokens, out, cell, model, settings, None)


def _chain_job(tokens, states: list[tuple[int, str]], size, size_def, model, settings) -> dict:
    """One size's stable chain: a segment to each branch point in turn; the last state's tokens and time."""
    import torch

    from ehrscale.train.trainer import train_stable

    start = None
    for until, path in states:
        if not Path(path).exists():  # a rerun with the same --work continues (killed segments resume)
            assert train_stable(tokens, path, size, size_def, until, model, settings, start=start) == 0
        start = path
    st = torch.load(start, map_location="cpu", weights_only=False)["state"]
    return {"tokens": int(st["tokens"]), "seconds": float(st["elapsed"]), "segments": len(states)}


def _cooldown_job(tokens, out, cell, model, settings, branch) -> dict:
    return _cell_job(tokens, out, cell, model, settings, branch)


def _cell_job(tokens, out, cell, model, settings, branch) -> dict:
    """A cell (a cooldown when ``branch`` is given); a finished one in ``--work`` is kept (a rerun continues)."""
    from ehrscale.train.trainer import train_cell

    metrics = Path(out) / "metrics.json"
    if not metrics.exists():
        assert train_cell(tokens, out, cell, model, settings, branch=branch) == 0
    return json.loads(metrics.read_text())


class _Runner:
    """Runs jobs in a process pool, or in this process when workers == 1; ``then`` queues follow-on jobs."""

    def __init__(self, workers: int):
        self.pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                     if workers > 1 else None)
        self.pending: dict = {}
        self.queue: list = []

    def submit(self, key, fn, *args, then=None) -> None:
        if self.pool is None:
            self.queue.append((key, fn, args, then))
        else:
            self.pending[self.pool.submit(fn, *args)] = (key, then)

    def results(self):
        while self.queue:
            key, fn, args, then = self.queue.pop(0)
            result = fn(*args)
            if then:
                then(result)
            yield key, result
        while self.pending:
            done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            for fut in done:
                key, then = self.pending.pop(fut)
                result = fut.result()
                if then:
                    then(result)
                yield key, result

    def collect(self, n_jobs: int, t0: float) -> dict:
        """Every job's result by key (follow-on jobs included), with a progress line each; closes the pool."""
        results = {}
        for i, (key, result) in enumerate(self.results(), 1):
            results[key] = result
            print(f"[bench] {i}/{n_jobs} {key} done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
        self.close()
        return results

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# ---------------------------------------------------------------------------- the comparison


def _plan(args, vocab_size, train_tokens, budgets, settings):
    from ehrscale.model.config import ModelSettings
    from ehrscale.plan.grid import GridSettings, plan_cells

    centre = {"params": args.centre_params, "budget": args.centre_budget, "exponent": args.exponent,
              "per_budget": args.per_budget, "spacing": args.spacing}
    grid = GridSettings(budgets=list(budgets), min_tokens_per_param=0, max_tokens_per_param=1e9, max_epochs=1e9,
                        centre=centre)
    return plan_cells({}, grid, vocab_size, args.context, train_tokens, ModelSettings(context_length=args.context),
                      settings)


def _fit(metrics_paths, bootstrap: int, starts: int) -> dict:
    """a and b as ``ehrscale fit`` reports them (its headline), both approaches."""
    from ehrscale.core.errors import EhrscaleError
    from ehrscale.fit.loss import fit_points
    from ehrscale.fit.points import load_points
    from ehrscale.fit.settings import FitSettings

    settings = FitSettings(bootstrap=bootstrap, approach2_bootstrap=bootstrap, epoch_bootstrap=0, calibration_sims=0,
                           backtest=False, n_starts=starts)
    try:
        points, warnings = load_points(metrics_paths, settings.loss_metric, settings.param_count)
        head = fit_points(points, settings, warnings)["headline"]
    except EhrscaleError as err:
        return {"error": str(err)}
    return {f"{k}_approach{n}": head[f"{k}_approach{n}"] for k in ("a", "b") for n in (2, 3)}


def _inside(wsd: dict | None, cosine: dict | None) -> bool | None:
    """Whether WSD's estimate lies in cosine's interval; None when cosine's is not estimable."""
    if not wsd or not cosine or wsd.get("estimate") is None or cosine.get("ci_low") is None or cosine.get("ci_high") is None:
        return None
    return cosine["ci_low"] <= wsd["estimate"] <= cosine["ci_high"]


def _fmt_interval(rec: dict | None) -> str:
    if not rec or rec.get("estimate") is None:
        return "n/a"
    if rec.get("ci_low") is None or rec.get("ci_high") is None:
        return f"{rec['estimate']:.3f} (interval not estimable)"
    return f"{rec['estimate']:.3f} [{rec['ci_low']:.3f}, {rec['ci_high']:.3f}]"


def _claim(work: Path, settings: dict) -> None:
    """Finished jobs in ``work`` are reused, so a ``work`` of other settings is refused."""
    mark = work / "bench_settings.json"
    settings = json.loads(json.dumps(settings))
    if mark.exists() and json.loads(mark.read_text()) != settings:
        raise SystemExit(f"{work} holds a run of other settings ({mark}); give a new --work")
    work.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps(settings, indent=1))


def _summary(rows: list[dict]) -> dict:
    rel = [r["relative_difference"] for r in rows]
    return {"mean_relative_difference": sum(rel) / len(rel),
            "mean_abs_relative_difference": sum(abs(x) for x in rel) / len(rel),
            "worst_cell": max(rows, key=lambda r: abs(r["relative_difference"]))}


def _fits_and_inside(paths: dict[str, list], args) -> tuple[dict, dict]:
    fits = {name: _fit(p, args.fit_bootstrap, args.fit_starts) for name, p in paths.items()}
    inside = {key: _inside(fits["wsd"].get(key), fits["cosine"].get(key))
              for key in ("a_approach2", "b_approach2", "a_approach3", "b_approach3")}
    return fits, inside


def run_twins(args) -> dict:
    """Twin mode: cosine twins of a finished WSD run's cells, with the run's own settings."""
    import torch

    from ehrscale.core.config import load_config
    from ehrscale.core.settings import load_settings
    from ehrscale.model.config import ModelSettings
    from ehrscale.plan.grid import plan_from_config, stable_chains, trained_tokens
    from ehrscale.plan.rules import TrainSettings, learning_rate_for
    from ehrscale.train.tune import read_tuned_lr

    run_dir, work = Path(args.run), Path(args.work or tempfile.mkdtemp(prefix="ehrscale-wsd-twins-"))
    tokens = run_dir / "tokens"
    config = load_config(args.config)
    model = load_settings(ModelSettings, config.get("model"), "model")
    wsd = load_settings(TrainSettings, config.get("train"), "train")
    if wsd.schedule != "wsd":
        raise SystemExit(f"{args.config}: train.schedule is {wsd.schedule!r}; twin mode compares a wsd run")
    all_cells = plan_from_config(config, tokens)[0]
    cells = all_cells
    if args.budgets:
        cells = [c for c in cells if any(math.isclose(c.budget, b, rel_tol=1e-9) for b in args.budgets)]
    if not cells:
        raise SystemExit("no cells of the run at --budgets")
    wsd_metrics = {c.id: run_dir / "runs" / c.id / "metrics.json" for c in cells}
    missing = [str(p) for p in wsd_metrics.values() if not p.exists()]
    if missing:
        raise SystemExit(f"the run is not finished: {missing[0]} (and {len(missing) - 1} more) missing")
    lr = {c.size: read_tuned_lr(run_dir / "tune" / "lr_rule.json", c.size) if (run_dir / "tune").exists()
          else learning_rate_for(c.d_model, wsd) for c in cells}  # the run's peak LR per size
    base = {size: dataclasses.replace(wsd, schedule="cosine", threads=1, progress_seconds=3600.0,
                                      checkpoint_minutes=1e9, learning_rate=lr[size]) for size in lr}
    twin = {c.id: dataclasses.replace(base[c.size]) for c in cells}
    mults = sorted(args.cosine_lr_multipliers or [])
    _claim(work, {"run": str(run_dir.resolve()), "cells": sorted(wsd_metrics), "train": dataclasses.asdict(wsd),
                  "cosine_lr_multipliers": mults})

    t0 = time.perf_counter()
    runner = _Runner(args.workers)
    results, sweeps = {}, {}

    def submit_twins(size):
        for c in sorted((c for c in cells if c.size == size), key=lambda c: -c.tokens):
            runner.submit(c.id, _cosine_job, str(tokens), str(work / "cosine" / c.id), c, model, twin[c.id])

    if mults:  # each size's sweep first; its twins follow once its runs are in
        from ehrscale.plan.grid import smallest_cells
        from ehrscale.train.tune import choose

        first = smallest_cells(all_cells)  # the workflow's tune cell of each size
        pending = {size: len(mults) for size in lr}

        def swept(size):
            def then(_result):
                pending[size] -= 1
                if not pending[size]:
                    runs = [json.loads((work / "tune" / size / f"x{m:g}" / "metrics.json").read_text()) for m in mults]
                    sweeps[size] = choose(runs)
                    for c in cells:
                        if c.size == size:
                            twin[c.id].learning_rate = sweeps[size]["learning_rate"]
                    submit_twins(size)
            return then

        for size in sorted(lr, key=lambda s: -first[s].tokens):
            for m in mults:
                runner.submit(("tune", size, m), _cosine_job, str(tokens), str(work / "tune" / size / f"x{m:g}"),
                              first[size], model, dataclasses.replace(base[size], learning_rate=m * lr[size]),
                              then=swept(size))
    else:
        for size in lr:
            submit_twins(size)
    results |= runner.collect(len(cells) + len(lr) * len(mults), t0)
    wall = time.perf_counter() - t0

    rows = []
    for c in cells:
        cos, w = results[c.id], json.loads(wsd_metrics[c.id].read_text())
        for key in ("batch_size", "tokens", "seed") + (() if mults else ("learning_rate",)):  # twins but the schedule
            if cos[key] != w[key]:
                raise SystemExit(f"{c.id}: the twin's {key} {cos[key]} differs from the run's {w[key]}")
        rows.append({"cell": c.id, "size": c.size, "budget": c.budget, "n_params": c.n_params, "tokens": c.tokens,
                     "learning_rate": cos["learning_rate"], "learning_rate_wsd": w["learning_rate"],
                     "val_loss_cosine": cos["val_loss"],
                     "val_loss_wsd": w["val_loss"], "relative_difference": w["val_loss"] / cos["val_loss"] - 1})
    chains = stable_chains(cells, wsd)  # the run's segments up to this subset's last branch point, per size
    stable = {s: int(torch.load(run_dir / "stable" / s / f"T{pts[-1]}.pt", map_location="cpu",
                                weights_only=False)["state"]["tokens"]) for s, pts in chains.items()}
    measured = {"cosine": sum(results[c.id]["tokens"] for c in cells),
                "wsd": sum(stable.values()) + sum(m["tokens"] - m["branch_tokens"] for m in
                                                  (json.loads(p.read_text()) for p in wsd_metrics.values()))}
    fits, inside = _fits_and_inside({"cosine": [work / "cosine" / c.id / "metrics.json" for c in cells],
                                     "wsd": list(wsd_metrics.values())}, args)
    return {
        "command": " ".join(["bench/wsd.py", *sys.argv[1:]]) if __name__ == "__main__" else None,
        "mode": "twins", "run": str(run_dir), "tokens_dir": str(tokens), "work": str(work),
        "budgets": sorted({c.budget for c in cells}), "workers": args.workers, "wall_seconds": wall, "dropped": [],
        "cells": rows, **_summary(rows),
        "tokens_trained": measured | {"ratio": measured["wsd"] / measured["cosine"]},
        "tokens_planned": trained_tokens(cells, wsd),
        "training_seconds": {"cosine": sum(results[c.id]["wall_seconds"] for c in cells)},
        "cosine_lr_sweep": {"multipliers": mults, "sizes": sweeps},
        "per_budget": {f"{b:.3g}": _summary([r for r in rows if r["budget"] == b]) for b in sorted({r["budget"] for r in rows})},
        "fits": fits, "wsd_inside_cosine_interval": inside,
        "ladder": {"budgets": sorted({c.budget for c in all_cells}), **(lt := trained_tokens(all_cells, wsd)),
                   "cells": len(all_cells), "ratio": lt["wsd"] / lt["cosine"]},
    }


def run(args) -> dict:
    from ehrscale.model.config import ModelSettings
    from ehrscale.plan.grid import size_definition, stable_chains, trained_tokens
    from ehrscale.plan.rules import TrainSettings, branch_point
    from ehrscale.tokens.store import read_stats, target_tokens_from_stats

    work = Path(args.work or tempfile.mkdtemp(prefix="ehrscale-wsd-"))
    tokens = Path(args.tokens)
    if args.smoke:
        from ehrscale.tokens.toy import write_synthetic_tokens

        tokens = write_synthetic_tokens(work / "tokens", vocab_size=64, n_subjects={"train": 200, "tuning": 20, "held_out": 5},
                                        mean_length=300, seed=0)
    stats = read_stats(tokens)
    vocab_size, train_tokens = int(stats["vocab_size"]), target_tokens_from_stats(stats, "train")
    model = ModelSettings(context_length=args.context)
    wsd = TrainSettings(schedule="wsd", threads=1, min_steps=args.min_steps, val_windows=args.val_windows,
                        batch_tokens_per_param=args.batch_tokens_per_param, lr_base=args.lr_base,
                        cooldown_fraction=args.cooldown_fraction, progress_seconds=3600.0, checkpoint_minutes=1e9)
    cosine = dataclasses.replace(wsd, schedule="cosine")
    cells, dropped = _plan(args, vocab_size, train_tokens, args.budgets, wsd)
    if not cells:
        raise SystemExit("no cells in the grid")
    # The same cells both ways: the step-minimum drop does not depend on the schedule.
    assert [c.id for c in _plan(args, vocab_size, train_tokens, args.budgets, cosine)[0]] == [c.id for c in cells]
    _claim(work, {"tokens": str(tokens), "budgets": list(args.budgets), "context": args.context,
                  "centre": [args.centre_params, args.centre_budget, args.exponent, args.per_budget, args.spacing],
                  "train": dataclasses.asdict(wsd)})
    chains = stable_chains(cells, wsd)
    by_size = {c.size: c for c in cells}
    state = {(size, p): str(work / "stable" / f"{size}.{p}.pt") for size, points in chains.items() for p in points}

    t0 = time.perf_counter()
    runner = _Runner(args.workers)
    results: dict = {}

    def cooldowns_of(size):
        def submit(_chain_result):
            for c in cells:
                if c.size == size:
                    runner.submit(("wsd", c.id), _cooldown_job, tokens, str(work / "wsd" / c.id), c, model, wsd,
                                  state[(size, branch_point(c.tokens, wsd))])
        return submit

    # Chains first (they unlock the cooldowns), then the cosine cells, longest first.
    for size, points in sorted(chains.items(), key=lambda kv: -kv[1][-1]):
        runner.submit(("chain", size), _chain_job, tokens, [(p, state[(size, p)]) for p in points], size,
                      size_definition(by_size[size]), model, wsd, then=cooldowns_of(size))
    for c in sorted(cells, key=lambda c: -c.tokens):
        runner.submit(("cosine", c.id), _cosine_job, tokens, str(work / "cosine" / c.id), c, model, cosine)
    results |= runner.collect(len(chains) + 2 * len(cells), t0)
    wall = time.perf_counter() - t0

    rows = []
    for c in cells:
        lc, lw = results[("cosine", c.id)]["val_loss"], results[("wsd", c.id)]["val_loss"]
        rows.append({"cell": c.id, "size": c.size, "budget": c.budget, "n_params": c.n_params, "tokens": c.tokens,
                     "learning_rate": results[("cosine", c.id)]["learning_rate"],
                     "val_loss_cosine": lc, "val_loss_wsd": lw, "relative_difference": lw / lc - 1})
    measured = {
        "cosine": sum(results[("cosine", c.id)]["tokens"] for c in cells),
        "wsd": sum(results[("chain", s)]["tokens"] for s in chains)
        + sum(results[("wsd", c.id)]["tokens"] - results[("wsd", c.id)]["branch_tokens"] for c in cells),
    }
    seconds = {
        "cosine": sum(results[("cosine", c.id)]["wall_seconds"] for c in cells),
        "wsd": sum(results[("chain", s)]["seconds"] for s in chains)
        + sum(results[("wsd", c.id)]["job_wall_seconds"] for c in cells),
    }
    fits, inside = _fits_and_inside({name: [work / name / c.id / "metrics.json" for c in cells]
                                     for name in ("cosine", "wsd")}, args)
    ladder_budgets = ladder(args.ladder_start)
    ladder_cells, _ = _plan(args, vocab_size, train_tokens, ladder_budgets, wsd)
    ladder_tokens = trained_tokens(ladder_cells, wsd)
    return {
        "command": " ".join(["bench/wsd.py", *sys.argv[1:]]) if __name__ == "__main__" else None,
        "tokens_dir": str(tokens), "work": str(work), "budgets": list(args.budgets),
        "centre": {"params": args.centre_params, "budget": args.centre_budget, "exponent": args.exponent,
                   "per_budget": args.per_budget, "spacing": args.spacing},
        "train": {k: v for k, v in dataclasses.asdict(wsd).items() if k != "schedule"},
        "context_length": args.context, "workers": args.workers, "wall_seconds": wall,
        "dropped": [{"cell": c.id, "reason": r} for c, r in dropped],
        "cells": rows, **_summary(rows),
        "tokens_trained": measured | {"ratio": measured["wsd"] / measured["cosine"]},
        "tokens_planned": trained_tokens(cells, wsd),
        "training_seconds": seconds,
        "stable_chains": {s: {"branch_points": chains[s], **results[("chain", s)]} for s in chains},
        "fits": fits, "wsd_inside_cosine_interval": inside,
        "ladder": {"budgets": ladder_budgets, "cells": len(ladder_cells), **ladder_tokens,
                   "ratio": ladder_tokens["wsd"] / ladder_tokens["cosine"]},
    }


def report(r: dict) -> None:
    print(f"WSD vs cosine on {len(r['cells'])} cells, budgets {', '.join(f'{b:.3g}' for b in r['budgets'])} "
          f"({r['tokens_dir']}; {r['workers']} workers, {r['wall_seconds']:.0f}s wall)")
    for d in r["dropped"]:
        print(f"  dropped {d['cell']}: {d['reason']}")
    print(f"{'cell':<22} {'N':>8} {'D':>10} {'peak lr':>8} {'cosine':>8} {'wsd':>8} {'rel diff':>9}")
    for row in r["cells"]:
        print(f"{row['cell']:<22} {row['n_params']:>8,} {row['tokens']:>10,} {row['learning_rate']:>8.2e} {row['val_loss_cosine']:>8.4f} "
              f"{row['val_loss_wsd']:>8.4f} {100 * row['relative_difference']:>+8.2f}%")
    for b, v in (r.get("per_budget") or {}).items():
        print(f"  budget {b}: mean {100 * v['mean_relative_difference']:+.2f}%, mean |diff| "
              f"{100 * v['mean_abs_relative_difference']:.2f}%, worst {v['worst_cell']['cell']} "
              f"{100 * v['worst_cell']['relative_difference']:+.2f}%")
    for size, sw in ((r.get("cosine_lr_sweep") or {}).get("sizes") or {}).items():
        cands = ", ".join(f"{c['learning_rate']:.3g}: {c['val_loss']:.4f}" for c in sw["candidates"])
        print(f"  cosine LR {size}: {sw['learning_rate']:.3g}{' (at the edge)' if sw['at_edge'] else ''} ({cands})")
    w = r["worst_cell"]
    print(f"mean relative difference (wsd/cosine - 1): {100 * r['mean_relative_difference']:+.2f}% "
          f"(mean |diff| {100 * r['mean_abs_relative_difference']:.2f}%; target within 2%); "
          f"worst cell {w['cell']} {100 * w['relative_difference']:+.2f}%")
    t, p, s = r["tokens_trained"], r["tokens_planned"], r["training_seconds"]
    print(f"tokens trained (measured): cosine {t['cosine']:,}, wsd {t['wsd']:,}, ratio {t['ratio']:.3f} "
          f"(planned: {p['wsd'] / p['cosine']:.3f})")
    if "wsd" in s:
        print(f"training seconds (sum over jobs, shared machine): cosine {s['cosine']:.0f}, wsd {s['wsd']:.0f}, "
              f"ratio {s['wsd'] / max(s['cosine'], 1e-9):.3f}")
    for key in ("a_approach2", "b_approach2", "a_approach3", "b_approach3"):
        c, wv = r["fits"]["cosine"].get(key), r["fits"]["wsd"].get(key)
        inside = r["wsd_inside_cosine_interval"][key]
        verdict = "not estimable" if inside is None else "inside" if inside else "OUTSIDE"
        print(f"{key:<12} cosine {_fmt_interval(c):<34} wsd {_fmt_interval(wv):<34} wsd in cosine's interval: {verdict}")
    for name in ("cosine", "wsd"):
        if "error" in r["fits"][name]:
            print(f"fit ({name}) not done: {r['fits'][name]['error']}")
    lad = r["ladder"]
    print(f"{len(lad['budgets'])}-budget ladder (planner): {lad['cells']} cells, tokens cosine {lad['cosine']:,}, wsd {lad['wsd']:,}, "
          f"ratio {lad['ratio']:.3f} (target <= 0.60)")


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run_twins(args) if args.run else run(args)
    report(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0 if all(math.isfinite(c["val_loss_wsd"]) for c in result["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
