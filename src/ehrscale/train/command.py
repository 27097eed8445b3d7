"""``ehrscale train`` (one IsoFLOPs cell) and ``ehrscale stable`` (one WSD stable segment).

Each job gets its sections as JSON flags (the workflow passes only its own cell's), or reads them
from ``--config``; the loop is :mod:`ehrscale.train.trainer`.
"""

from __future__ import annotations

from pathlib import Path

from ehrscale.core.config import load_config
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.settings import load_settings
from ehrscale.model.config import ModelSettings
from ehrscale.plan.grid import GridSettings, find_cell, parse_cell_id, parse_chain, resolve_sizes
from ehrscale.plan.rules import TrainSettings, check_settings
from ehrscale.tokens.store import read_stats, target_tokens_from_stats
from ehrscale.train.trainer import train_cell, train_stable
from ehrscale.train.tune import read_tuned_lr


def _common_arguments(parser) -> None:
    parser.add_argument("--tokens", required=True, help="the tokenizer's output directory (stats.json, train/, tuning/)")
    parser.add_argument("--config", help="config YAML; its model_sizes/grid/model/train sections are the defaults")
    parser.add_argument("--sizes", help="model_sizes: JSON ladder, or 'default' / 'debug'")
    parser.add_argument("--model", help="model section as JSON (or @file.json)")
    parser.add_argument("--settings", help="train section as JSON (or @file.json)")
    parser.add_argument("--lr-file", help="the tune step's JSON (tune/lr_rule.json): this size's learning_rate is the peak LR")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (overrides settings)")


def add_arguments(parser) -> None:
    _common_arguments(parser)
    parser.add_argument("--out", required=True, help="run directory: metrics.json, model.pt, log.csv, checkpoint.pt")
    parser.add_argument("--cell", required=True, help="cell id from 'ehrscale plan', e.g. C3e11_d32L2")
    parser.add_argument("--grid", help="grid section as JSON (or @file.json)")
    parser.add_argument("--branch", help="wsd: the size's stable state at this cell's branch point (then only the cooldown runs)")
    parser.add_argument("--adopt", nargs="+", default=[], metavar="METRICS",
                        help="LR-sweep runs' metrics.json: a run that trained this very cell is copied")
    parser.add_argument("--save-branch", action="store_true",
                        help="wsd, one job: also write <out>/branch.pt, the state at the branch point (a first stable segment)")


def add_stable_arguments(parser) -> None:
    _common_arguments(parser)
    parser.add_argument("--out", required=True, help="the branch state to write (checkpoint format)")
    parser.add_argument("--size", required=True, help="the chain: a size in --sizes, or size_u<fraction> on a data subset")
    parser.add_argument("--until", required=True, type=int, help="stop at the first step boundary at or past this many tokens")
    parser.add_argument("--start", help="the previous branch state of this size's chain (none: from step 0)")
    parser.add_argument("--adopt", nargs="+", default=[], metavar="METRICS",
                        help="LR-sweep runs' metrics.json: a first segment copies the branch.pt beside them that is its state")


def _load(args, size: str) -> tuple[dict, dict, ModelSettings, TrainSettings, dict]:
    """The sections a job runs on: each flag (JSON or @file.json), else the --config file's section;
    ``size``: whose peak LR --lr-file gives."""
    config = load_config(args.config) if args.config else {}
    pick = lambda arg, key: config.get(key) if arg is None else arg  # noqa: E731
    sizes = resolve_sizes(pick(args.sizes, "model_sizes"))
    model = load_settings(ModelSettings, pick(args.model, "model"), "model")
    settings = load_settings(TrainSettings, pick(args.settings, "train"), "train")
    if args.threads is not None:
        settings.threads = args.threads
    if args.lr_file:
        settings.learning_rate = read_tuned_lr(args.lr_file, size)
    check_settings(settings)
    return config, sizes, model, settings, read_stats(args.tokens)


def _run_dirs(metrics_files: list[str]) -> list[Path]:
    """--adopt names the sweep runs by their metrics.json (the workflow's declared inputs)."""
    return [Path(p).parent for p in metrics_files]


def run(args) -> int:
    config, sizes, model, settings, stats = _load(args, parse_cell_id(args.cell)[0])
    grid = load_settings(GridSettings, config.get("grid") if args.grid is None else args.grid, "grid")
    cell = find_cell(args.cell, sizes, grid, int(stats["vocab_size"]), model.context_length,
                     target_tokens_from_stats(stats, "train"), model)
    return train_cell(args.tokens, args.out, cell, model, settings, stats, branch=args.branch, adopt=_run_dirs(args.adopt),
                      save_branch=args.save_branch)


def run_stable(args) -> int:
    size = parse_chain(args.size)[0]  # a chain on a data subset ('d32L2_u0p25') trains its size's definition
    _, sizes, model, settings, stats = _load(args, size)
    if size not in sizes:
        raise EhrscaleError(f"--size {args.size!r}: {size!r} is not in --sizes ({', '.join(sizes)})")
    return train_stable(args.tokens, args.out, args.size, sizes[size], args.until, model, settings,
                        start=args.start, stats=stats, adopt=_run_dirs(args.adopt))
