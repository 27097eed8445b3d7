"""Each size's peak learning rate, chosen by a small sweep: ``ehrscale tune``.

Porian et al. (2024) traced part of the Kaplan-Chinchilla disagreement to an LR that was
not tuned per size; a width formula that was never swept tilts the law the same way. So
the workflow trains each size's smallest cell of the grid (the cheapest run that size
has) once per multiplier in ``tune.lr_multipliers`` of the width rule's LR
(``ehrscale.plan.rules.learning_rate_for``), under the configured schedule, and this step keeps
the LR with the lowest validation loss. Every cell, stable segment and replicate of the
size then trains at it. The sweep runs are ordinary cells in ``tune/<size>/x<multiplier>/``,
cached like any other.

A best LR at either end of the sweep is flagged (``at_edge``): widen the multipliers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import write_json


def choose(runs: list[dict]) -> dict:
    """The run with the lowest ``val_loss``, with every candidate and whether it is an end of the sweep."""
    if not runs:
        raise EhrscaleError("no sweep runs to choose a learning rate from")
    runs = sorted(runs, key=lambda m: m["learning_rate"])
    best = min(range(len(runs)), key=lambda i: runs[i]["val_loss"])
    return {
        "size": runs[best]["size"], "learning_rate": runs[best]["learning_rate"], "val_loss": runs[best]["val_loss"],
        "cell": runs[best]["cell"], "tokens": runs[best]["tokens"],
        "at_edge": len(runs) > 1 and best in (0, len(runs) - 1),
        "candidates": [{"learning_rate": m["learning_rate"], "val_loss": m["val_loss"]} for m in runs],
    }


def read_tuned_lr(path: str | Path) -> float:
    """The peak LR the tune step chose for a size (this module's JSON)."""
    try:
        return float(json.loads(Path(path).read_text())["learning_rate"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EhrscaleError(f"{path}: not a tune result with a learning_rate ({err})") from err


def add_arguments(parser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, help="the sweep runs' metrics.json files")
    parser.add_argument("--out", required=True, help="JSON with the chosen learning_rate")


def run(args) -> int:
    runs = []
    for path in args.runs:
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise EhrscaleError(f"{path}: not a readable metrics.json ({err})") from err
    sizes = {m.get("size") for m in runs}
    if len(sizes) != 1:
        raise EhrscaleError(f"sweep runs of more than one size: {sorted(map(str, sizes))}")
    result = choose(runs)
    write_json(args.out, result)
    lrs = ", ".join(f"{c['learning_rate']:.3g}: {c['val_loss']:.4f}" for c in result["candidates"])
    print(f"[{result['size']}] LR {result['learning_rate']:.3g} (val_loss {result['val_loss']:.4f}; {lrs})"
          + (" at the edge of the sweep: widen tune.lr_multipliers" if result["at_edge"] else ""), file=sys.stderr)
    return 0
