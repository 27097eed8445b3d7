"""How much the training rules tilt the law: the default grid trained under the old rules.

Porian et al. (2024) traced the Kaplan-Chinchilla disagreement to warmup, AdamW beta2 at
small batches and an LR not tuned per size. ehrscale's rules changed accordingly (issue 12);
this script trains the *same* grid (the config's cells, same tokens; ``--budgets K``: its K
smallest budgets) under the rules it had before, and fits it with ``ehrscale fit``; with
``--new-runs`` it fits the same cells of the default run the same way, so that the
exponents compare like for like:

* old: cosine per cell; rows per step from the cell's D (the power of two <= D / (ctx x
  2000), clipped to [4, 256]); warmup 5 % of D; AdamW beta2 0.95; peak LR from the width
  rule 3e-3 (64 / d_model)^0.75, never swept;
* new (the default run): WSD, rows per step fixed per size, warmup N tokens, beta2 0.99,
  peak LR chosen per size by the sweep.

    .venv/bin/python bench/rules.py --config config/config.yaml --tokens results/synthetic/tokens \\
        --out /tmp/rules-old [--budgets 4] [--new-runs results/synthetic/runs] [--workers 2]

Trained cells are kept in ``--out/runs``; a rerun skips cells already done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def old_rules(cell, ctx: int, base):
    """TrainSettings reproducing the pre-issue-12 rules for one cell."""
    raw = cell.tokens / (ctx * 2000)
    rows = 2 ** int(math.floor(math.log2(raw))) if raw >= 1 else 1
    return dataclasses.replace(base, schedule="cosine", batch_size=int(min(max(rows, 4), 256)), beta2=0.95,
                               warmup_tokens_per_param=0.05 * cell.tokens / cell.n_params, learning_rate=None,
                               min_steps=1)


def _train(job) -> str:
    tokens, out, cell, model, settings = job
    from ehrscale.train.trainer import train_cell

    if not (Path(out) / "metrics.json").exists():
        train_cell(tokens, out, cell, model, settings)
    return cell.id


def main(argv=None) -> int:
    from ehrscale.core.config import load_config
    from ehrscale.core.settings import load_settings
    from ehrscale.model.config import ModelSettings
    from ehrscale.plan.grid import plan_from_config
    from ehrscale.plan.rules import TrainSettings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--tokens", default="results/synthetic/tokens")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", type=int, help="only the grid's K smallest budgets (the cheap end)")
    ap.add_argument("--new-runs", help="the default run's runs/ directory: the same cells, fitted the same way")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    config = load_config(args.config)
    cells = plan_from_config(config, args.tokens)[0]
    budgets = sorted({c.budget for c in cells})[: args.budgets or None]
    cells = [c for c in cells if c.budget in budgets]
    model = load_settings(ModelSettings, config.get("model"), "model")
    base = load_settings(TrainSettings, config.get("train"), "train")
    base = dataclasses.replace(base, threads=1, progress_seconds=1e9)
    out = Path(args.out)
    jobs = [(args.tokens, str(out / "runs" / c.id), c, model, old_rules(c, model.context_length, base)) for c in cells]
    jobs.sort(key=lambda j: -j[2].tokens)  # longest first: the pool ends together
    with ProcessPoolExecutor(args.workers) as pool:
        for i, cell_id in enumerate(pool.map(_train, jobs), 1):
            print(f"[{i}/{len(jobs)}] {cell_id}", flush=True)
    ids = [c.id for c in cells]
    rows = [("old rules", _fit([out / "runs" / i / "metrics.json" for i in ids], out / "fits-old"))]
    if args.new_runs:
        rows.append(("new rules (default run)", _fit([Path(args.new_runs) / i / "metrics.json" for i in ids],
                                                      out / "fits-new")))
    print(f"\n{len(ids)} cells, budgets {', '.join(f'{b:.3g}' for b in budgets)}")
    print(f"\n{'rules':<26} {'a (Approach 3, 6ND)':>22} {'a (Approach 2, 6ND)':>22} {'b (Approach 3, 6ND)':>22}")
    for name, fits in rows:
        print(f"{name:<26} {_exponent(fits, 'a', 'approach3_vp'):>22} {_exponent(fits, 'a', 'approach2'):>22} "
              f"{_exponent(fits, 'b', 'approach3_vp'):>22}")
    return 0


def _fit(metrics: list[Path], out: Path) -> dict:
    settings = {"bootstrap": 1000, "calibration_sims": 0, "backtest": False}
    subprocess.run([sys.executable, "-m", "ehrscale", "fit", "--metrics", *map(str, metrics), "--out", str(out),
                    "--settings", json.dumps(settings)], check=True)
    return json.loads((out / "scaling.json").read_text())


def _exponent(fits: dict, key: str, estimator: str) -> str:
    """'0.512 (0.401-0.623)' from a scaling.json's headline on the 6ND basis."""
    rec = ((fits.get("headline") or {}).get("by_basis") or {}).get("6ND", {}).get(key, {}).get(estimator) or {}
    if rec.get("estimate") is None:
        return "n/a"
    lo, hi = rec.get("ci_low"), rec.get("ci_high")
    return f"{rec['estimate']:.3f} " + (f"({lo:.3f}-{hi:.3f})" if lo is not None and hi is not None else "(n.e.)")


if __name__ == "__main__":
    sys.exit(main())
