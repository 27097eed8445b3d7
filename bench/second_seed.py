"""Two finished runs of one grid under different ``train.seed``: do the laws agree?

A stand-in for "another machine" (issue #22): data order and initialisation change, the cohort and
the grid do not. Make the second run with an overlay that renames the dataset and sets the seed,
then compare:

    printf 'dataset:\\n  name: synthetic-seed1\\ntrain:\\n  seed: 1\\n' > seed1.yaml
    snakemake --cores all --configfile config/config.yaml seed1.yaml
    .venv/bin/python bench/second_seed.py results/synthetic results/synthetic-seed1

Printed: a and b of every estimator on C = 6ND with their intervals, whether each run's estimate
lies inside the other's interval, the lowest-loss size per budget with its loss, the per-cell loss
difference (its SD is a cell-noise estimate: two seeds per cell), the learning rates the sweep chose,
and the utility rise counts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

ESTIMATORS = ("approach3_vp", "approach3_epoch", "approach2")


def load(run: Path) -> dict:
    fits = run / "fits"
    missing = [p for p in (fits / "scaling.json", fits / "points.csv") if not p.exists()]
    if missing:
        sys.exit(f"second_seed: {run} is not a finished run (missing {', '.join(map(str, missing))})")
    utility = fits / "utility.json"
    return {"scaling": json.loads((fits / "scaling.json").read_text()), "points": pd.read_csv(fits / "points.csv"),
            "utility": json.loads(utility.read_text()) if utility.exists() else None}


def _interval(r: dict | None) -> str:
    if not r or r.get("estimate") is None:
        return "n/a"
    if r.get("ci_low") is None:
        return f"{r['estimate']:.3f}"
    return f"{r['estimate']:.3f} ({r['ci_low']:.3f} to {r['ci_high']:.3f})"


def _inside(x: dict | None, y: dict | None) -> str:
    if not x or not y or y.get("ci_low") is None or x.get("estimate") is None:
        return "n/a"
    return "yes" if y["ci_low"] <= x["estimate"] <= y["ci_high"] else "no"


def exponents(a: dict, b: dict) -> None:
    print("exponent  estimator        first                     second                    first in second's  second in first's")
    for name in ("a", "b"):
        for est in ESTIMATORS:
            x = a["scaling"]["headline"]["by_basis"]["6ND"][name].get(est)
            y = b["scaling"]["headline"]["by_basis"]["6ND"][name].get(est)
            print(f"{name:<9} {est:<16} {_interval(x):<25} {_interval(y):<25} {_inside(x, y):<18} {_inside(y, x)}")


def lowest_sizes(a: dict, b: dict) -> None:
    def best(p):
        return p.loc[p.groupby("budget")["val_loss"].idxmin(), ["budget", "size", "val_loss"]].set_index("budget")

    x, y = best(a["points"]), best(b["points"])
    print("\nbudget     lowest size (first)   lowest size (second)   same")
    same = 0
    for budget in x.index.union(y.index):
        fx, fy = x.loc[budget] if budget in x.index else None, y.loc[budget] if budget in y.index else None
        sx = f"{fx['size']} {fx['val_loss']:.4f}" if fx is not None else "-"
        sy = f"{fy['size']} {fy['val_loss']:.4f}" if fy is not None else "-"
        agree = fx is not None and fy is not None and fx["size"] == fy["size"]
        same += agree
        print(f"{budget:<10.3g} {sx:<21} {sy:<22} {'yes' if agree else 'no'}")
    print(f"same lowest size at {same} of {len(x.index.union(y.index))} budgets")


def cell_noise(a: dict, b: dict) -> None:
    m = a["points"][["cell", "val_loss", "learning_rate"]].merge(
        b["points"][["cell", "val_loss", "learning_rate"]], on="cell", suffixes=("_1", "_2"))
    d = (m["val_loss_2"].map(math.log) - m["val_loss_1"].map(math.log))
    # two seeds per cell: the SD of one cell's ln loss is SD(difference) / sqrt(2)
    print(f"\ncells in both: {len(m)}; ln loss, second - first: mean {d.mean():+.4f}, SD {d.std(ddof=1):.4f} "
          f"-> cell noise SD {d.std(ddof=1) / math.sqrt(2):.4f}; largest |difference| {d.abs().max():.4f}")
    lr = m.assign(size=m["cell"].str.split("_").str[1]).groupby("size")[["learning_rate_1", "learning_rate_2"]].first()
    ratio = (lr["learning_rate_2"] / lr["learning_rate_1"]).map(math.log).abs()
    changed = lr[ratio > math.log(1.01)]
    print(f"sizes whose peak LR changed with the seed (by over 1 %): {len(changed)} of {len(lr)}; the largest change "
          f"x{math.exp(ratio.max()):.3g}"
          + "".join(f"\n  {s}: {r.learning_rate_1:.3g} -> {r.learning_rate_2:.3g}" for s, r in changed.iterrows()))


def utility(a: dict, b: dict) -> None:
    if not (a["utility"] and b["utility"]):
        print("\nutility: n/a (a run has no fits/utility.json)")
        return
    n = len(a["utility"]["tasks"])
    print(f"\nutility rise beyond both cells' intervals: first {a['utility']['n_tasks_rising']} of {n}, "
          f"second {b['utility']['n_tasks_rising']} of {n}; beyond the paired interval: "
          f"first {a['utility']['n_tasks_rising_paired']}, second {b['utility']['n_tasks_rising_paired']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("first", type=Path, help="a finished run, e.g. results/synthetic")
    ap.add_argument("second", type=Path, help="the same grid under another train.seed")
    args = ap.parse_args(argv)
    a, b = load(args.first), load(args.second)
    seeds = {int(a["points"]["seed"].iloc[0]), int(b["points"]["seed"].iloc[0])}
    if len(seeds) != 2:
        sys.exit(f"second_seed: both runs trained with seed {seeds.pop()}: nothing to compare")
    print(f"first {args.first} (seed {a['points']['seed'].iloc[0]}), second {args.second} (seed {b['points']['seed'].iloc[0]})\n")
    exponents(a, b)
    lowest_sizes(a, b)
    cell_noise(a, b)
    utility(a, b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
