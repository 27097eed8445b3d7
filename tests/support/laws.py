"""Scaling-law data drawn from a known law: IsoFLOPs grids of cells and the runs directory they would leave."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

CHINCHILLA = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}
# Same but beta chosen so that a = beta / (alpha + beta) = 0.58, the paper's exponent.
PAPER_LIKE = CHINCHILLA | {"beta": 0.348 * 0.58 / 0.42}
BUDGETS = (1e18, 1e19, 1e20, 1e21, 1e22)
def exponents(p):
    a = p["beta"] / (p["alpha"] + p["beta"])
    return a, 1 - a


def make_points(p, budgets=BUDGETS, n_sizes=9, span=2.0, noise=0.005, seed=0, shift=None):
    """An IsoFLOPs grid around the true N_opt of each budget (C = 6ND), multiplicative noise."""
    rng = np.random.default_rng(seed)
    a, _ = exponents(p)
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    rows = []
    for c in budgets:
        n_opt = g * (c / 6) ** a
        for i, x in enumerate(np.linspace(-span, span, n_sizes)):
            n = n_opt * math.exp(x + (shift or {}).get(c, 0.0))
            d = c / (6 * n)
            loss = (p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]) * math.exp(noise * rng.standard_normal())
            rows.append({"cell": f"c{c:.0e}_s{i}", "size": f"s{i}", "budget": c, "n_params": n,
                         "n_params_nonembedding": 0.8 * n, "tokens": d, "flops": 6 * n * d, "flops_per_token": 6 * n,
                         "val_loss": loss, "train_loss": 0.98 * loss})
    df = pd.DataFrame(rows)
    return df.assign(n=df["n_params"], loss=df["val_loss"], log_path="")


def write_runs(df, root, logs=True):
    extra = {"epochs": 1.0, "wall_seconds": 1.0, "tokens_per_second": 1e5, "device": "cpu", "dtype": "float32", "mfu": 0.1,
             "config_hash": "abc", "seed": 0, "context_length": 256, "batch_size": 4, "learning_rate": 1e-3}
    paths = []
    for r in df.drop(columns=["n", "loss", "log_path"]).to_dict("records"):
        cell = root / r["cell"]
        cell.mkdir(parents=True)
        (cell / "metrics.json").write_text(json.dumps(r | extra))
        if logs:
            t = np.geomspace(r["tokens"] / 50, r["tokens"], 10)
            pd.DataFrame({"step": range(10), "tokens": t, "flops": t * r["flops_per_token"],
                          "train_loss": r["val_loss"] * (t / r["tokens"]) ** -0.1, "lr": 1e-3,
                          "tokens_per_second": 1e5, "elapsed_s": range(10)}).to_csv(cell / "log.csv", index=False)
        paths.append(cell / "metrics.json")
    return paths
