"""The data-constrained law (Muennighoff et al. 2023) on tables drawn from a known one: R* recovered, its
interval covering at its rate, the comparison with the plain law, and the fit reading each cell's U."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ehrscale.fit.law import effective_data
from ehrscale.fit.loss import fit_paths
from ehrscale.fit.repetition import calibrate_data_constrained, fit_data_constrained, half_value_epochs, interval_text, predict
from ehrscale.fit.settings import FitSettings

TRUTH = [1.2, 60.0, 300.0, 0.35, 0.30, 5.0]  # E, A, B, alpha, beta, R*
U_FULL = 7e6


def design():
    """Three budgets x five sizes x four nested data fractions: up to ~150 epochs at the smallest."""
    rows = [(n, c / (6 * n), U_FULL * f, c) for c in (1e11, 3e11, 1e12) for n in np.geomspace(1e4, 2e5, 5)
            for f in (1 / 64, 1 / 16, 1 / 4, 1)]
    return (np.array(v) for v in zip(*rows))


def test_effective_data_is_fresh_data_until_it_repeats_then_saturates():
    d = np.array([5e5, 1e6, 2e6, 1e7, 1e9])
    dp = effective_data(d, 1e6, 5.0)
    assert dp[0] == 5e5 and dp[1] == 1e6  # no repetition: every token fresh
    assert (np.diff(dp) > 0).all() and dp[-1] <= 1e6 * (1 + 5.0) and dp[-2] < 1e7  # worth less and less, at most U (1 + R*)
    # the marginal value of a repeated token is exp(-(R - 1) / R*): half at R = 1 + R* ln 2
    r = half_value_epochs(5.0)
    slope = (effective_data(r * 1e6 + 1, 1e6, 5.0) - effective_data(r * 1e6 - 1, 1e6, 5.0)) / 2
    assert slope == pytest.approx(0.5, rel=1e-4)


def test_a_known_r_star_is_recovered_and_the_law_beats_the_plain_one():
    n, d, u, c = design()
    loss = predict(TRUTH, n, d, u) * np.exp(0.003 * np.random.default_rng(0).standard_normal(len(n)))
    fit = fit_data_constrained(n, d, u, loss, strata=c, bootstrap_reps=60)
    r = fit["params"]["r_star"]
    assert r["identified"] and r["ci_low"] <= TRUTH[5] <= r["ci_high"] and abs(r["estimate"] - TRUTH[5]) < 0.5
    assert fit["half_value_epochs"]["estimate"] == pytest.approx(float(half_value_epochs(r["estimate"])))
    comp = fit["comparison"]
    assert comp["lower_error"] == "data_constrained"
    assert comp["leave_one_cell_out"]["rmse_data_constrained"] < 0.5 * comp["leave_one_cell_out"]["rmse_plain"]
    assert comp["backtest_largest_budget"]["rmse_data_constrained"] < comp["backtest_largest_budget"]["rmse_plain"]


def test_a_parameter_whose_interval_reaches_the_box_is_not_identified():
    """E = 0 lies below the box's floor (e^-10): its interval reaches it, and it is reported as not identified,
    with why; the parameters the design does pin down stay identified."""
    n, d, u, c = design()
    truth = [0.0, *TRUTH[1:]]
    loss = predict(truth, n, d, u) * np.exp(0.003 * np.random.default_rng(2).standard_normal(len(n)))
    p = fit_data_constrained(n, d, u, loss, strata=c, bootstrap_reps=40, compare=False)["params"]
    assert not p["E"]["identified"] and "edge" in p["E"]["reason"]
    assert p["r_star"]["identified"] and p["beta"]["identified"]
    assert "not identified" in interval_text(p["E"]) and "not identified" not in interval_text(p["r_star"])


def test_the_r_star_interval_covers_at_its_rate():
    n, d, u, c = design()
    cal = calibrate_data_constrained(n, d, u, TRUTH, 0.004, strata=c, sims=12, reps=60, seed=3)
    assert cal["with_interval"] == 12
    assert cal["coverage"] >= 9 / 12  # nominal 95 %: P(<= 8 of 12) < 0.3 %
    assert abs(cal["log_bias"]) < 0.1


def test_without_repetition_r_star_is_not_estimable():
    n, d, _, c = design()
    u = np.full(len(n), 1e9)  # more unique tokens than any cell trains on
    fit = fit_data_constrained(n, d, u, predict(TRUTH, n, d, u), strata=c)
    assert not fit["fitted"] and "not estimable" in fit["reason"]


def test_the_fit_reads_each_cells_unique_tokens_and_keeps_subsets_out_of_the_plain_laws(tmp_path):
    """metrics.json records U and R; the data-constrained law uses them, the IsoFLOPs and L(N, D) fits only
    the whole-split cells."""
    n, d, u, c = design()
    loss = predict(TRUTH, n, d, u) * np.exp(0.003 * np.random.default_rng(1).standard_normal(len(n)))
    paths = []
    for i, (ni, di, ui, ci, li) in enumerate(zip(n, d, u, c, loss)):
        frac = ui / U_FULL
        cell = tmp_path / f"c{i}"
        cell.mkdir()
        (cell / "metrics.json").write_text(json.dumps({
            "cell": f"C{ci:.0e}_s{i}" + ("" if frac == 1 else f"_u{frac:.6g}"), "size": f"s{i % 5}", "budget": ci,
            "n_params": ni, "n_params_nonembedding": 0.8 * ni, "tokens": di, "flops": 6 * ni * di, "flops_per_token": 6 * ni,
            "val_loss": li, "epochs": di / ui, "unique_tokens": ui, "data_fraction": frac}))
        paths.append(cell / "metrics.json")
    s = FitSettings(bootstrap=20, epoch_bootstrap=0, approach2_bootstrap=20, calibration_sims=0, backtest=False,
                    repeat_bootstrap=30, repeat_calibration_sims=0)
    result = fit_paths(paths, tmp_path / "fits", s)
    assert result["n_cells"] == 15  # the whole-split cells
    assert any("unique-data subsets" in w for w in result["warnings"])
    dc = result["data_constrained"]
    assert dc["n_cells"] == 60 and dc["unique_tokens"] == U_FULL
    assert dc["params"]["r_star"]["ci_low"] <= TRUTH[5] <= dc["params"]["r_star"]["ci_high"]
    from ehrscale.fit.optimal import optimal_for_budget

    plan = optimal_for_budget(tmp_path / "fits" / "scaling.json", 1e13, unique_tokens=1e6)["data_constrained"]
    assert plan["epochs"]["estimate"] > 1 and plan["loss_lost_to_repetition"]["estimate"] > 0
    assert plan["n_opt"]["ci_low"] <= plan["n_opt"]["estimate"] <= plan["n_opt"]["ci_high"]
