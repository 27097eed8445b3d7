"""The utility laws on cells whose true AUROC follows a known law: choice on tuning only, identification,
baselines and crossovers, and backtests whose intervals cover."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehrscale.fit.utility import best_per_budget, fit_utility, saturating
from ehrscale.report.utility import utility_section
from support.utility import HeldOutSet, write_baseline, write_cell

BUDGETS = [1e11, 3e11, 1e12, 3e12, 1e13]
TRUE = (0.80, 0.10, 0.6)  # A, k, gamma of AUROC(C) = A - k (C / C_ref)^-gamma
SLOPE = -0.5  # loss = (AUROC - 2) / SLOPE: the two-stage map is exactly linear


def truth(budget: float, shift: float = 0.0) -> float:
    z = np.log(budget) - np.mean(np.log(BUDGETS))
    return float(saturating(z, *TRUE)) - shift


def simulate(root, seed: int, plant: bool = False, baseline: float | None = None, per_budget: int = 3):
    """Cells at every budget: the best on the law, the others below it; returns (points, probe files, baselines)."""
    ho = HeldOutSet(seed=seed)
    rows, files = [], []
    for b in BUDGETS:
        for j in range(per_budget):
            auroc = truth(b, 0.03 * j)
            cell = f"C{b:.0e}_{j}"
            rows.append({"cell": cell, "budget": b, "n": 1e4 * 3**j, "tokens": b / (6e4 * 3**j), "loss": (auroc - 2) / SLOPE})
            files.append(write_cell(root, ho, cell, {"t": auroc}, gain={"estimate": 0.01, "lo": 0.002, "hi": 0.018}))
        if plant and b == BUDGETS[-1]:  # held_out's best, tuning's worst
            cell = f"C{b:.0e}_planted"
            rows.append({"cell": cell, "budget": b, "n": 5e5, "tokens": b / 3e6, "loss": 3.0})
            files.append(write_cell(root, ho, cell, {"t": 0.97}, tuning={"t": 0.51}))
    bases = [write_baseline(root / "baseline", ho, "t", {"full_history": baseline, "same_examples": baseline,
                                                         "same_window": baseline - 0.02})] if baseline else []
    return pd.DataFrame(rows), files, bases


def test_a_cell_best_on_held_out_but_worst_on_tuning_is_never_chosen(tmp_path):
    points, files, bases = simulate(tmp_path, seed=1, plant=True, baseline=0.75)
    result, table = fit_utility(points, files, bases, draws=100)
    t = result["tasks"]["t"]
    planted = "C1e+13_planted"
    assert table.loc[table["cell"] == planted, "auroc"].iloc[0] == table["auroc"].max()  # it is held_out's best
    assert planted not in {p["cell"] for p in t["frontier_points"]}
    assert planted not in (t["rise"]["largest"]["cell"], t["backtest"]["cell"])
    assert t["backtest"]["observed"] < 0.9 and t["rise"]["largest"]["estimate"] < 0.9
    assert planted not in utility_section(result)
    assert best_per_budget(table[table["task"] == "t"])["cell"].tolist() == [p["cell"] for p in t["frontier_points"]]


def test_the_law_and_a_crossover_are_recovered_and_identified(tmp_path):
    points, files, bases = simulate(tmp_path, seed=2, baseline=truth(1e12))
    result, _ = fit_utility(points, files, bases, draws=200)
    t = result["tasks"]["t"]
    fr = t["frontier"]
    assert fr["fitted"] and all(fr[k]["identified"] for k in ("A", "k", "gamma"))
    assert fr["A"]["ci_low"] <= TRUE[0] <= fr["A"]["ci_high"]
    cross = t["baselines"]["same_examples"]["crossover"]
    assert cross["identified"] and cross["ci_low"] <= 1e12 <= cross["ci_high"]
    assert t["two_stage"]["b"]["ci_low"] <= SLOPE <= t["two_stage"]["b"]["ci_high"]
    assert t["combined"][-1]["gain_over_counts"]["estimate"] == pytest.approx(0.01)
    text = utility_section(result)
    assert "not identified" not in text.split("| t |")[-1]


def test_a_parameter_an_optimiser_leaves_just_inside_its_bound_is_not_identified():
    """An optimiser pressing on a bound stops short of it: 2.7e-4 with an interval from 1.6e-5 (the default
    run's readmission k) is the bound, not a measured slope; 0.006 to 0.29 is a measurement."""
    from ehrscale.fit.utility import identify

    box = (0.0, 1.0)
    assert not identify({"estimate": 2.7e-4, "ci_low": 1.6e-5, "ci_high": 0.34}, box)["identified"]
    assert not identify({"estimate": 0.018, "ci_low": 3.6e-4, "ci_high": 0.31}, box)["identified"]
    assert identify({"estimate": 0.028, "ci_low": 0.0059, "ci_high": 0.29}, box)["identified"]
    assert not identify({"estimate": 0.9995, "ci_low": 0.9, "ci_high": 0.9999}, box)["identified"]


def test_a_ceiling_at_its_bound_is_not_identified_and_has_no_crossover(tmp_path):
    """Perfect separation everywhere: A sits at 1, the box's edge. Not a ceiling: 'not identified'."""
    ho = HeldOutSet(seed=3)
    rows, files = [], []
    for b in BUDGETS:
        cell = f"C{b:.0e}_0"
        rows.append({"cell": cell, "budget": b, "n": 1e4, "tokens": b / 6e4, "loss": 2.0})
        files.append(write_cell(tmp_path, ho, cell, {"t": 0.9999}))
    base = write_baseline(tmp_path / "baseline", ho, "t", {"full_history": 0.7, "same_examples": 0.7, "same_window": 0.7})
    result, _ = fit_utility(pd.DataFrame(rows), files, [base], draws=100)
    t = result["tasks"]["t"]
    assert not t["frontier"]["A"]["identified"] and "bound" in t["frontier"]["A"]["reason"]
    cross = t["baselines"]["same_examples"]["crossover"]
    assert not cross["identified"] and "not identified" in cross["reason"]
    assert "not identified" in utility_section(result)


def test_backtests_hold_the_observation_at_their_rate():
    """Twenty experiments drawn from the law: each backtest's error interval (the law refitted and the
    largest budget's chosen cell rescored on the same patient resamples) holds 0 at about its rate."""
    import tempfile
    from pathlib import Path

    hits = {"frontier": 0, "two_stage": 0}
    sims = 20
    for seed in range(sims):
        with tempfile.TemporaryDirectory() as d:
            points, files, _ = simulate(Path(d), seed=100 + seed)
            bt = fit_utility(points, files, draws=200, seed=seed)[0]["tasks"]["t"]["backtest"]
            for law in hits:
                assert bt[law]["estimable"]
                hits[law] += bool(bt[law]["observed_in_interval"])
    assert hits["frontier"] >= 16 and hits["two_stage"] >= 16, hits  # nominal 95 %: 19 of 20
