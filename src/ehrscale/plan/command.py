"""``ehrscale plan``: the IsoFLOPs grid of a config (cells, N, D, C, epochs, jobs, GPU-hours),
or, with ``--budget`` and ``--fits``, the compute-optimal N, D and loss for one budget.

Imports no torch: sizing a cluster run needs only the config and the token stats.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

from ehrscale.core.config import load_config
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import read_json, write_json
from ehrscale.core.settings import load_settings
from ehrscale.model.config import ModelSettings
from ehrscale.plan.grid import (
    Cell,
    GridSettings,
    TrainData,
    job_resources,
    plan_cells,
    resolve_sizes,
    stable_chains,
    trained_tokens,
    tune_cells,
)
from ehrscale.plan.rules import TrainSettings, batch_size_for, branch_point, learning_rate_for
from ehrscale.tokens.store import target_tokens_from_stats


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="config YAML with model_sizes, grid, model, train sections (needed unless --budget/--fits); "
                        "a preset is laid over config/config.yaml, as Snakemake's --configfile does")
    parser.add_argument("--tokens-stats", help="the tokenizer's stats.json (or its TOKENS directory): vocab size and training-split size")
    parser.add_argument("--vocab-size", type=int, help="vocab size when no --tokens-stats is given")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--tokens-per-second", type=float, help="measured training throughput, for time estimates")
    rate.add_argument("--mfu", type=float, help="assumed model FLOPs utilisation (with --peak-flops)")
    parser.add_argument("--peak-flops", type=float, help="accelerator peak FLOP/s (with --mfu), e.g. 989e12 for H100 bf16")
    parser.add_argument("--json", dest="json_out", help="also write the plan (kept and dropped cells) to this JSON file")
    parser.add_argument("--budget", type=float, help="with --fits: print the compute-optimal N, D and predicted loss for this budget")
    parser.add_argument("--fits", help="the fit module's scaling JSON (with --budget)")
    parser.add_argument("--unique-tokens", type=float, help="with --budget: the dataset's unique train tokens (default: "
                        "--tokens-stats', else the most any fitted cell had): the data-constrained optimum")


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@dataclasses.dataclass(frozen=True)
class Throughput:
    """How time is estimated: measured tokens per second, or MFU x peak FLOP/s, or not at all."""

    tokens_per_second: float | None = None
    mfu: float | None = None
    peak_flops: float | None = None

    @classmethod
    def choose(cls, args, cluster: dict) -> "Throughput":
        """The flags, else the config's ``cluster`` section (what the workflow gives the scheduler)."""
        if args.tokens_per_second or args.mfu:
            return cls(args.tokens_per_second, args.mfu, args.peak_flops)
        if cluster.get("tokens_per_second"):
            return cls(float(cluster["tokens_per_second"]))
        if cluster.get("mfu") and cluster.get("peak_flops"):
            return cls(None, float(cluster["mfu"]), float(cluster["peak_flops"]))
        return cls()

    def __bool__(self) -> bool:
        return bool(self.tokens_per_second or self.mfu)

    @property
    def label(self) -> str:
        if self.tokens_per_second:
            return f"{self.tokens_per_second:,.0f} tokens/s"
        return f"MFU {self.mfu:g} of {self.peak_flops:.3g} FLOP/s"

    def seconds(self, cell: Cell, tokens: int | None = None) -> float | None:
        tokens = cell.tokens if tokens is None else tokens
        if self.tokens_per_second:
            return tokens / self.tokens_per_second
        if self.mfu:
            return tokens * cell.flops_per_token / (self.mfu * self.peak_flops)
        return None


def _stats_from(path: str) -> tuple[int, int | None]:
    """(vocab size, train targets) from ``--tokens-stats`` (the stats.json or its directory)."""
    p = Path(path)
    p = p / "stats.json" if p.is_dir() else p
    stats = read_json(p, "token stats")
    if "vocab_size" not in stats:
        raise EhrscaleError(f"{p} has no 'vocab_size'")
    return int(stats["vocab_size"]), target_tokens_from_stats(stats, "train")


def _train_data(tokens_stats: str | None, grid: GridSettings, train_tokens: int | None) -> TrainData:
    """U of every data fraction: exact from the token store when ``--tokens-stats`` is its directory (as the
    workflow plans), else fraction x train tokens."""
    store = Path(tokens_stats) if tokens_stats else None
    if store is not None and store.is_dir() and (store / "train").is_dir() and any(f < 1 for f in grid.data_fractions):
        return TrainData.of_store(store, grid.data_fractions)
    return TrainData(train_tokens)


def _cell_rows(kept: list[Cell], ctx: int, train: TrainSettings, rate: Throughput) -> list[dict]:
    """Print one line per kept cell; return the rows of the JSON plan."""
    print(f"{'cell':<22} {'N':>10} {'N_nonemb':>10} {'D':>11} {'C':>9} {'D/N':>8} {'epochs':>7} {'batch':>5} "
          f"{'steps':>7} {'lr':>8} {'time':>7}")
    rows = []
    for c in kept:
        bs = batch_size_for(c.n_params, ctx, train)
        steps = math.ceil(c.tokens / (bs * ctx))
        lr = learning_rate_for(c.d_model, train)
        s = rate.seconds(c)
        ep = "-" if c.epochs is None else f"{c.epochs:.2f}"
        print(f"{c.id:<22} {c.n_params:>10,} {c.n_params_nonembedding:>10,} {c.tokens:>11,} {c.budget:>9.3g} "
              f"{c.tokens_per_param:>8.3g} {ep:>7} {bs:>5} {steps:>7} {lr:>8.2e} {_fmt_time(s):>7}")
        rows.append({**c.as_dict(), "batch_size": bs, "steps_approx": steps, "learning_rate": lr, "estimated_seconds": s})
    return rows


def _print_jobs(kept: list[Cell], train: TrainSettings, tune_runs: list, gpus: int) -> None:
    chains = stable_chains(kept, train)
    wsd_jobs = sum(len(p) for p in chains.values())
    print(f"jobs: {len(kept)} cells" + (f" (cooldowns) + {wsd_jobs} stable segments in {len(chains)} chains"
          if train.schedule == "wsd" else "") + (f" + {len(tune_runs)} LR-tune runs" if tune_runs else "")
          + (f", {gpus} GPU each" if gpus else ", CPU only"))
    tokens = trained_tokens(kept, train)
    tune_tokens = sum(c.tokens for c, _ in tune_runs)
    print(f"tokens trained: cosine {tokens['cosine']:,}, wsd {tokens['wsd']:,} "
          f"({100 * tokens['wsd'] / max(tokens['cosine'], 1):.0f} % of cosine)" + (f"; LR tune {tune_tokens:,}" if tune_runs else ""))


def _print_hours(kept: list[Cell], train: TrainSettings, tune_runs: list, gpus: int, rate: Throughput,
                 requested: dict | None) -> None:
    """Device-hours of each schedule and the longest job; ``requested``: what the scheduler is asked for it."""
    if not (kept and rate):
        print("GPU-hours: unknown (give --tokens-per-second, or --mfu and --peak-flops, or a config `cluster` section)")
        return
    cosine_s = sum(rate.seconds(c) for c in kept)
    wsd_s = sum(rate.seconds(c, c.tokens - branch_point(c.tokens, train)) for c in kept)
    per_chain = {c.chain: c for c in kept}  # any cell of a chain: its cost per token
    wsd_s += sum(rate.seconds(per_chain[chain], points[-1]) for chain, points in stable_chains(kept, train).items())
    tune_s = sum(rate.seconds(c) for c, _ in tune_runs)
    hours = lambda sec: f"{sec * max(gpus, 1) / 3600:,.1f}"  # noqa: E731
    print(f"{'GPU' if gpus else 'CPU'}-hours at {rate.label}: cosine {hours(cosine_s)}, wsd {hours(wsd_s)} "
          f"(this config: {train.schedule})" + (f"; LR tune {hours(tune_s)}" if tune_runs else ""))
    longest = max(kept, key=rate.seconds)
    line = f"longest job: {longest.id} {_fmt_time(rate.seconds(longest))}"
    if requested is not None:
        line += f" (asks the scheduler for {_fmt_time(requested['runtime'] * 60)}: x{requested['factor']:g} margin)"
    print(line)


def _plan_budget(args) -> int:
    from ehrscale.fit.optimal import format_plan, optimal_for_budget

    unique = args.unique_tokens or (_stats_from(args.tokens_stats)[1] if args.tokens_stats else None)
    print(format_plan(optimal_for_budget(args.fits, args.budget, unique)))
    return 0


def run(args) -> int:
    if (args.budget is None) != (args.fits is None):
        raise EhrscaleError("--budget and --fits go together")
    if args.budget is not None:
        return _plan_budget(args)
    if not args.config:
        raise EhrscaleError("--config is required (except with --budget and --fits)")
    if (args.mfu is None) != (args.peak_flops is None):
        raise EhrscaleError("--mfu and --peak-flops go together")
    config = load_config(args.config)
    grid = load_settings(GridSettings, config.get("grid"), "grid")
    model = load_settings(ModelSettings, config.get("model"), "model")
    train = load_settings(TrainSettings, config.get("train"), "train")
    vocab_size, train_tokens = _stats_from(args.tokens_stats) if args.tokens_stats else (args.vocab_size, None)
    if not vocab_size:
        raise EhrscaleError("give --tokens-stats or --vocab-size")
    ctx = model.context_length
    data = _train_data(args.tokens_stats, grid, train_tokens)
    kept, dropped = plan_cells(resolve_sizes(config.get("model_sizes")), grid, vocab_size, ctx, data, model, train)
    cluster = config.get("cluster") or {}
    rate = Throughput.choose(args, cluster)
    gpus = int(cluster.get("gpus_per_job", 1) or 0)
    tune_runs = tune_cells(kept, config.get("tune"), train)

    print(f"IsoFLOPs grid: vocab {vocab_size}, context {ctx}, {len(kept)} cells kept, {len(dropped)} dropped")
    rows = _cell_rows(kept, ctx, train, rate)
    _print_jobs(kept, train, tune_runs, gpus)
    requested = None
    if kept and rate and cluster.get("runtime_factor") and not (args.tokens_per_second or args.mfu):
        longest = max(kept, key=rate.seconds)
        requested = {"runtime": job_resources(longest, ctx, vocab_size, cluster, train)["runtime"],
                     "factor": float(cluster["runtime_factor"])}
    _print_hours(kept, train, tune_runs, gpus, rate, requested)
    if train_tokens is None:
        print("note: no --tokens-stats: epochs unknown, max_epochs not applied")
    elif set(grid.data_fractions) - set(data.subsets):
        print("note: no token store beside the stats: a data fraction's U is estimated as fraction x train tokens")
    if dropped:
        print(f"dropped ({len(dropped)}):")
        for c, reason in dropped:
            print(f"  {c.id:<22} N {c.n_params:,}  D {c.tokens:,}: {reason}")
    if args.json_out:
        write_json(args.json_out, {
            "vocab_size": vocab_size, "context_length": ctx, "train_tokens": train_tokens,
            "cells": rows, "dropped": [{**c.as_dict(), "reason": r} for c, r in dropped],
        })
    sys.stdout.flush()
    return 0
