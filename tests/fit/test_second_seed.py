"""bench/second_seed.py on two small fabricated runs: the exponents' mutual coverage, the lowest size per
budget, and the cell noise it reports (the SD of a cell's ln loss from two seeds)."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest

from support import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("bench_second_seed", ROOT / "bench" / "second_seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(path, seed, losses, a_est, lrs):
    fits = path / "fits"
    fits.mkdir(parents=True)
    rows = [{"cell": f"C{b}_{s}", "budget": float(b), "size": s, "val_loss": loss, "learning_rate": lrs[s], "seed": seed}
            for (b, s), loss in losses.items()]
    pd.DataFrame(rows).to_csv(fits / "points.csv", index=False)
    est = {"estimate": a_est, "ci_low": a_est - 0.05, "ci_high": a_est + 0.05}
    basis = {k: dict.fromkeys(("approach3_vp", "approach3_epoch", "approach2"), est) for k in ("a", "b")}
    (fits / "scaling.json").write_text(json.dumps({"headline": {"by_basis": {"6ND": basis}}}))
    (fits / "utility.json").write_text(json.dumps({"tasks": {"t": {}}, "n_tasks_rising": seed, "n_tasks_rising_paired": 1}))
    return path


def test_the_comparison_reports_coverage_lowest_sizes_and_cell_noise(tmp_path, capsys):
    cells = [(b, s) for b in ("1e10", "1e11") for s in ("s1", "s2", "s3")]
    first = {c: 1.5 - 0.1 * (c[0] == "1e11") + 0.01 * abs(int(c[1][1]) - 2) for c in cells}  # s2 lowest everywhere
    shift = np.array([0.004, -0.003, 0.002, -0.001, 0.005, -0.002])
    second = {c: first[c] * math.exp(d) for c, d in zip(cells, shift)}
    second[("1e11", "s3")] = 1.35  # the seed moves one budget's minimum
    _run(tmp_path / "one", 0, first, 0.50, {"s1": 1e-2, "s2": 5e-3, "s3": 2e-3})
    _run(tmp_path / "two", 1, second, 0.58, {"s1": 1e-2, "s2": 1e-2, "s3": 2e-3})
    assert _bench().main([str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out
    assert out.count(" no ") >= 6  # 0.50 and 0.58 lie outside each other's +-0.05 intervals
    assert "same lowest size at 1 of 2 budgets" in out
    d = np.log([second[c] for c in cells]) - np.log([first[c] for c in cells])
    assert f"cell noise SD {np.std(d, ddof=1) / math.sqrt(2):.4f}" in out
    assert "peak LR changed with the seed (by over 1 %): 1 of 3; the largest change x2" in out and "s2: 0.005 -> 0.01" in out
    assert "first 0 of 1, second 1 of 1" in out


def test_two_runs_of_one_seed_are_refused(tmp_path):
    losses = {("1e10", "s1"): 1.5}
    _run(tmp_path / "one", 0, losses, 0.5, {"s1": 1e-2})
    _run(tmp_path / "two", 0, losses, 0.5, {"s1": 1e-2})
    with pytest.raises(SystemExit, match="both runs trained with seed 0"):
        _bench().main([str(tmp_path / "one"), str(tmp_path / "two")])
