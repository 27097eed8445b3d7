"""Science and contract tests for ``ehrscale fit`` (synthetic cells from known laws)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ehrscale.cli import main
from ehrscale.core.errors import EhrscaleError
from ehrscale.fit.frontier import fit_frontier
from ehrscale.fit.isoflops import fit_isoflops
from ehrscale.fit.loss import fit_paths, fit_points
from ehrscale.fit.optimal import format_plan, optimal_for_budget
from ehrscale.fit.parametric import fit_parametric
from ehrscale.fit.settings import FitSettings
from support.laws import BUDGETS, CHINCHILLA, PAPER_LIKE, exponents, make_points, write_runs

# Contract tests skip the slow extras (calibration, backtest, the cross-check's bootstrap); science tests run them.
FAST = {"epoch_bootstrap": 0, "approach2_bootstrap": 50, "calibration_sims": 0, "backtest": False}


def fast(**kw) -> FitSettings:
    return FitSettings(**(FAST | kw))


# ---------------------------------------------------------------- science


@pytest.mark.parametrize("truth", [CHINCHILLA, PAPER_LIKE], ids=["chinchilla", "a058"])
def test_approach3_recovers_known_law(truth):
    df = make_points(truth)
    fit = fit_parametric(df["n"], df["tokens"], df["loss"], bootstrap=0)
    p = {k: v["estimate"] for k, v in fit["params"].items()}
    a, b = exponents(truth)
    assert abs(p["E"] - truth["E"]) < 0.05
    assert abs(p["alpha"] - truth["alpha"]) < 0.03
    assert abs(p["beta"] - truth["beta"]) < 0.03
    assert abs(p["a"] - a) < 0.03 and abs(p["b"] - b) < 0.03


@pytest.mark.parametrize("truth", [CHINCHILLA, PAPER_LIKE], ids=["chinchilla", "a058"])
def test_approach2_recovers_known_exponents(truth):
    iso = fit_isoflops(make_points(truth))
    a, b = exponents(truth)
    assert all(r["reliable"] for r in iso["per_budget"])
    a_hat, b_hat = iso["n_opt_law"]["exponent"], iso["d_opt_law"]["exponent"]
    assert abs(a_hat["estimate"] - a) < 0.03 and abs(b_hat["estimate"] - b) < 0.03
    assert a_hat["ci_low"] < a_hat["estimate"] < a_hat["ci_high"]
    # flops_per_token = 6N exactly, so the D relation is ln 6 + ln N
    rel = iso["flops_per_token_relation"]
    assert rel["slope"] == pytest.approx(1.0) and rel["intercept"] == pytest.approx(math.log(6))


def test_edge_minimum_flagged_and_excluded():
    # budget 1e20 sampled only at and above its optimum: the minimum sits at the smallest size
    df = make_points(CHINCHILLA, shift={1e20: 2.0})
    iso = fit_isoflops(df)
    rec = {r["budget"]: r for r in iso["per_budget"]}
    assert not rec[1e20]["reliable"] and ("smallest" in rec[1e20]["reason"] or "outside" in rec[1e20]["reason"])
    assert sum(r["reliable"] for r in iso["per_budget"]) == 4
    assert iso["n_opt_law"]["n_budgets"] == 4
    assert any("1e+20" in w for w in iso["warnings"])
    assert abs(iso["n_opt_law"]["exponent"]["estimate"] - exponents(CHINCHILLA)[0]) < 0.03


def test_downward_parabola_flagged():
    df = make_points(CHINCHILLA, budgets=(1e18, 1e19, 1e20, 1e21))
    m = df["budget"] == 1e19
    df.loc[m, "loss"] = 5.0 - (np.log(df.loc[m, "n"]) - np.log(df.loc[m, "n"]).mean()) ** 2 * 0.01
    rec = {r["budget"]: r for r in fit_isoflops(df)["per_budget"]}
    assert not rec[1e19]["reliable"] and "downward" in rec[1e19]["reason"]


def test_bootstrap_intervals_cover_truth():
    a_true, _ = exponents(CHINCHILLA)
    covered = {"a": 0, "alpha": 0, "beta": 0}
    for trial in range(10):
        df = make_points(CHINCHILLA, n_sizes=7, noise=0.01, seed=100 + trial)
        fit = fit_parametric(df["n"], df["tokens"], df["loss"], bootstrap=20, n_starts=4, seed=trial)
        for key, truth in (("a", a_true), ("alpha", CHINCHILLA["alpha"]), ("beta", CHINCHILLA["beta"])):
            r = fit["params"][key]
            covered[key] += r["ci_low"] <= truth <= r["ci_high"]
    assert all(c >= 7 for c in covered.values()), covered


def test_loss_frontier_recovers_known_law():
    rng = np.random.default_rng(3)
    c = np.geomspace(1e16, 1e21, 8)
    y = (1.7 + 900.0 * c**-0.17) * np.exp(0.002 * rng.standard_normal(c.size))
    fr = fit_frontier(c, y, "min")
    assert abs(fr["E"]["estimate"] - 1.7) < 0.05
    assert abs(fr["gamma"]["estimate"] - 0.17) < 0.02
    assert abs(math.log(fr["K"]["estimate"] / 900.0)) < 0.3
    for k, truth in (("E", 1.7), ("gamma", 0.17), ("K", 900.0)):
        assert fr[k]["ci_low"] <= truth <= fr[k]["ci_high"]
    # a metric to maximise (AUROC) uses the same machinery: E is its ceiling
    up = fit_frontier(c, 0.85 - 0.3 * (c / 1e16) ** -0.15, "max")
    assert up["E"]["estimate"] == pytest.approx(0.85, abs=1e-4) and up["gamma"]["estimate"] == pytest.approx(0.15, abs=1e-3)


def test_fit_points_frontier_matches_chinchilla_gamma():
    res = fit_points(make_points(CHINCHILLA), fast(bootstrap=0))
    gamma = CHINCHILLA["alpha"] * CHINCHILLA["beta"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"])
    assert abs(res["frontiers"]["val_loss"]["gamma"]["estimate"] - gamma) < 0.02


# ---------------------------------------------------------------- outputs and contract


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_runs(make_points(CHINCHILLA, budgets=BUDGETS[:4], n_sizes=6, span=1.5, noise=0.005), root, logs=False)
    return root


def test_deterministic_scaling_json(runs, tmp_path):
    s = FitSettings(bootstrap=8, n_starts=4, seed=7, epoch_bootstrap=4, approach2_bootstrap=20, calibration_sims=2, calibration_bootstrap=10)
    paths = sorted(runs.glob("*/metrics.json"))
    fit_paths(paths, tmp_path / "one", s)
    fit_paths(list(reversed(paths)), tmp_path / "two", s)
    assert (tmp_path / "one/scaling.json").read_bytes() == (tmp_path / "two/scaling.json").read_bytes()
    assert (tmp_path / "one/points.csv").read_bytes() == (tmp_path / "two/points.csv").read_bytes()


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def test_cli_outputs_and_no_subject_id(runs, tmp_path):
    rc = main(["fit", "--runs", str(runs), "--out", str(tmp_path / "fits"), "--summary", str(tmp_path / "summary.md"),
               "--settings", json.dumps(FAST | {"bootstrap": 5, "n_starts": 4, "param_count": "nonembedding"})])
    assert rc == 0
    result = json.loads((tmp_path / "fits/scaling.json").read_text())
    points = pd.read_csv(tmp_path / "fits/points.csv")
    summary = (tmp_path / "summary.md").read_text()
    assert len(points) == 24 and points["cell"].is_unique
    assert set(points["param_count"]) == {"nonembedding"} and result["param_count"] == "nonembedding"
    assert np.allclose(points["n"], points["n_params_nonembedding"])
    assert "nonembedding" in summary and "0.58" in summary
    for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
        assert set(result["approach3"]["params"][k]) == {"estimate", "ci_low", "ci_high"}
    assert "subject_id" not in points.columns
    assert "subject_id" not in set(_keys(result))
    assert "subject_id" not in summary


def test_cli_metrics_list(runs, tmp_path):
    files = [str(p) for p in sorted(runs.glob("*/metrics.json"))]
    rc = main(["fit", "--metrics", *files, "--out", str(tmp_path), "--settings", json.dumps(FAST | {"bootstrap": 0})])
    assert rc == 0 and json.loads((tmp_path / "scaling.json").read_text())["n_cells"] == 24


def test_planner(runs, tmp_path):
    fit_paths(sorted(runs.glob("*/metrics.json")), tmp_path, fast(bootstrap=100, n_starts=4))
    plan = optimal_for_budget(tmp_path / "scaling.json", 3e19)
    a3, a2 = plan["approach3"], plan["approach2"]
    for r in (a3["n_opt"], a3["d_opt"], a3["loss"], a2["n_opt"], a2["d_opt"]):
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"]
    assert a3["n_opt"]["estimate"] * a3["d_opt"]["estimate"] * 6 == pytest.approx(3e19, rel=1e-6)
    assert a2["n_opt"]["estimate"] == pytest.approx(a3["n_opt"]["estimate"], rel=0.2)
    assert plan["warnings"] == []
    text = format_plan(plan)
    assert "Approach 3" in text and "Approach 2" in text and "3e+19" in text
    assert "extrapolation" in " ".join(optimal_for_budget(tmp_path / "scaling.json", 1e25)["warnings"])
    with pytest.raises(EhrscaleError, match="positive"):
        optimal_for_budget(tmp_path / "scaling.json", -1)


# ---------------------------------------------------------------- errors


def test_error_no_cells(tmp_path):
    with pytest.raises(EhrscaleError, match="no cells"):
        fit_paths([], tmp_path / "out", FitSettings())
    (tmp_path / "empty").mkdir()
    assert main(["fit", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2


def test_error_missing_key_names_file_and_key(tmp_path):
    paths = write_runs(make_points(CHINCHILLA, budgets=BUDGETS[:1], n_sizes=4), tmp_path / "runs", logs=False)
    raw = json.loads(paths[2].read_text())
    del raw["flops_per_token"]
    paths[2].write_text(json.dumps(raw))
    with pytest.raises(EhrscaleError, match=r"metrics.json: missing key 'flops_per_token'") as err:
        fit_paths(paths, tmp_path / "out", fast(bootstrap=0))
    assert str(paths[2]) in str(err.value)


def test_too_few_sizes_per_budget_leaves_approach2_not_estimable(tmp_path):
    df = make_points(CHINCHILLA, budgets=BUDGETS[:3], n_sizes=2)
    res = fit_points(df, fast(bootstrap=0))
    assert res["headline"]["a_approach2"] is None and res["approach3"] is not None
    assert any("Approach 2 not estimable" in w for w in res["warnings"])


def test_approach3_on_runs_that_share_no_budget_recovers_their_law():
    """Cells at scattered (N, D), each its own budget (a published sweep, or a user's): L(N, D) needs no
    IsoFLOPs design; its interval on a covers the law's."""
    rng = np.random.default_rng(0)
    p = CHINCHILLA
    n = np.exp(rng.uniform(np.log(1e8), np.log(1e10), 40))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 40))
    loss = (p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]) * np.exp(0.005 * rng.standard_normal(40))
    df = pd.DataFrame({"cell": [f"c{i}" for i in range(40)], "size": [f"s{i}" for i in range(40)], "budget": 6 * n * d,
                       "n_params": n, "n_params_nonembedding": 0.8 * n, "tokens": d, "flops": 6 * n * d,
                       "flops_per_token": 6 * n, "val_loss": loss}).assign(n=n, loss=loss, log_path="")
    res = fit_points(df, fast(bootstrap=300))
    a = res["headline"]["a_approach3"]
    assert a["ci_low"] <= exponents(p)[0] <= a["ci_high"] and abs(a["estimate"] - exponents(p)[0]) < 0.05
    assert res["headline"]["a_approach2"] is None
    for k in ("alpha", "beta"):
        r = res["approach3"]["params"][k]
        assert r["ci_low"] <= p[k] <= r["ci_high"]


def test_settings_validation(runs, tmp_path):
    for bad in ('{"bootstrapp": 3}', '{"param_count": "embedding"}', '{"ci_level": 1.5}', '{"frontier_metrics": ["f1"]}'):
        assert main(["fit", "--runs", str(runs), "--out", str(tmp_path), "--settings", bad]) == 2
    assert not (tmp_path / "scaling.json").exists()


def test_diverged_cell_excluded_with_warning(tmp_path):
    df = make_points(CHINCHILLA, budgets=BUDGETS[:3], n_sizes=5)
    paths = write_runs(df, tmp_path / "runs", logs=False)
    raw = json.loads(paths[0].read_text())
    raw["val_loss"] = None
    paths[0].write_text(json.dumps(raw))
    res = fit_paths(paths, tmp_path / "out", fast(bootstrap=0))
    assert res["n_cells"] == 14 and any("diverged" in w for w in res["warnings"])


def test_edge_warning_reaches_summary_and_points(tmp_path):
    df = make_points(CHINCHILLA, budgets=BUDGETS[:4], n_sizes=6, shift={1e19: -2.5})
    paths = write_runs(df, tmp_path / "runs", logs=False)
    res = fit_paths(paths, tmp_path / "fits", fast(bootstrap=0), summary=tmp_path / "summary.md")
    text = (tmp_path / "summary.md").read_text()
    assert "budget 1e+19 FLOPs excluded from the power laws" in text
    assert res["approach2"]["n_opt_law"]["n_budgets"] == 3
    pts = pd.read_csv(tmp_path / "fits/points.csv")
    assert not pts.loc[pts["budget"] == 1e19, "budget_reliable"].any()
    assert pts.loc[pts["budget"] != 1e19, "budget_reliable"].all()


def test_weighted_power_law_and_grid_flops_plan(tmp_path):
    df = make_points(CHINCHILLA)
    res = fit_points(df, fast(bootstrap=5, n_starts=4, weighted_power_law=True))
    assert res["approach2"]["n_opt_law"]["weighted"]
    assert abs(res["headline"]["a_approach2"]["estimate"] - exponents(CHINCHILLA)[0]) < 0.03
    from ehrscale.core.files import write_json

    write_json(tmp_path / "scaling.json", res)
    plan = optimal_for_budget(tmp_path / "scaling.json", 1e20)
    # flops_per_token = 6N exactly, so counting the grid's FLOPs changes nothing
    for k in ("n_opt", "d_opt", "loss"):
        assert plan["approach3_grid_flops"][k]["estimate"] == pytest.approx(plan["approach3"][k]["estimate"], rel=0.01)


# ---------------------------------------------------------------- issue 11: trustworthy laws

from ehrscale.fit.calibration import calibrate, noise_from_replicates  # noqa: E402
from ehrscale.fit.isoflops import fit_budget, fpt_relation  # noqa: E402
from ehrscale.fit.law import natural, objective
from ehrscale.fit.robustness import backtest  # noqa: E402
from ehrscale.fit.vp import bootstrap_counts, fit_once, fit_vp, stratified_counts  # noqa: E402

SEVEN = tuple(np.geomspace(1e18, 1e21, 7))  # the 7-budget x 9-size design


def _assert_bounded(rec, low=0.0, high=1.0):
    """An interval is never wider than the quantity's range, and lies inside it."""
    if rec and rec.get("ci_low") is not None:
        assert low <= rec["ci_low"] <= rec["ci_high"] <= high and rec["ci_high"] - rec["ci_low"] < high - low, rec


@pytest.mark.parametrize("truth", [CHINCHILLA, PAPER_LIKE], ids=["chinchilla", "a058"])
def test_both_approach3_fits_recover_a_within_002(truth):
    df = make_points(truth, budgets=SEVEN, n_sizes=9, noise=0.005, seed=11)
    a_true, b_true = exponents(truth)
    vp = fit_vp(df["n"], df["tokens"], df["loss"], strata=df["budget"], bootstrap_reps=0)
    ep = fit_parametric(df["n"], df["tokens"], df["loss"], bootstrap=0)
    for fit in (vp, ep):
        assert abs(fit["params"]["a"]["estimate"] - a_true) < 0.02
        assert abs(fit["params"]["b"]["estimate"] - b_true) < 0.02
    # the two Approach 3 fits minimise the same objective: they agree on well-posed data
    assert vp["params"]["a"]["estimate"] == pytest.approx(ep["params"]["a"]["estimate"], abs=1e-4)
    assert vp["objective_value"] <= ep["objective_value"] * (1 + 1e-6)
    # the profile map's minimum sits near the truth, and the profile interval is a real interval around it
    prof = vp["profile"]
    assert abs(prof["grid_best"]["alpha"] - truth["alpha"]) < 0.1 and abs(prof["grid_best"]["beta"] - truth["beta"]) < 0.1
    pi = vp["profile_intervals"]["a"]
    assert pi["ci_low"] < pi["ci_high"] and pi["ci_low"] - 0.02 < a_true < pi["ci_high"] + 0.02


@pytest.mark.parametrize("seed", range(6))
def test_every_profile_interval_contains_its_estimate(seed):
    """The profile is taken under the estimate's own objective, around it: it can never exclude it (it did,
    taken as L2 around the coarse grid's minimum). Noisy, coarse designs too, where the two objectives differ."""
    df = make_points(CHINCHILLA if seed % 2 else PAPER_LIKE, budgets=BUDGETS[:4], n_sizes=5, noise=0.02, seed=seed)
    vp = fit_vp(df["n"], df["tokens"], df["loss"], strata=df["budget"], bootstrap_reps=0)
    for key in ("alpha", "beta", "a", "b"):
        r = vp["profile_intervals"][key]
        assert r["ci_low"] <= r["estimate"] <= r["ci_high"], (key, r)
        assert r["ci_low"] < r["ci_high"]


@pytest.mark.parametrize("truth", [CHINCHILLA, PAPER_LIKE], ids=["chinchilla", "a058"])
def test_approach2_within_003_on_seven_budgets(truth):
    df = make_points(truth, budgets=SEVEN, n_sizes=9, noise=0.005, seed=11)
    iso = fit_isoflops(df, bootstrap=200)
    a_true, _ = exponents(truth)
    ex = iso["exponents"]
    assert ex["usable_budgets"] == 7
    for basis in ("flops", "6ND"):  # flops_per_token = 6N here: the two bases coincide
        assert abs(ex[basis]["a"]["estimate"] - a_true) < 0.03
        _assert_bounded(ex[basis]["a"])
        assert ex[basis]["a"]["ci_low"] < ex[basis]["a"]["estimate"] < ex[basis]["a"]["ci_high"]


def test_vp_fits_points_without_isoflops_structure():
    rng = np.random.default_rng(5)
    p = CHINCHILLA
    n = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 40))
    d = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 40))
    loss = (p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]) * np.exp(0.003 * rng.standard_normal(40))
    vp = fit_vp(n, d, loss, bootstrap_reps=100)  # one stratum: no budgets at all
    assert abs(vp["params"]["alpha"]["estimate"] - p["alpha"]) < 0.05
    assert abs(vp["params"]["a"]["estimate"] - exponents(p)[0]) < 0.03
    assert vp["bootstrap"]["succeeded"] == 100


def test_batched_refinement_matches_lbfgsb():
    """The vectorised Levenberg-Marquardt used in bootstraps reaches the same Huber optimum as L-BFGS-B."""
    df = make_points(PAPER_LIKE, budgets=SEVEN[:4], n_sizes=7, noise=0.005, seed=2)
    n, d, loss = (df[k].to_numpy(float) for k in ("n", "tokens", "loss"))
    counts = stratified_counts(df["budget"], 8, np.random.default_rng(0))
    batch = bootstrap_counts(n, d, loss, counts)
    for r in range(len(counts)):
        theta, f_lbfgs, _ = fit_once(n, d, loss, weights=counts[r])
        E, A, B, al, be = batch[r]
        f_batch = objective([math.log(A), math.log(B), math.log(E), al, be], np.log(n), np.log(d), np.log(loss), 1e-3, counts[r])[0]
        assert f_batch * 1e-3 <= f_lbfgs * (1 + 1e-3) + 1e-12
        assert abs(be / (al + be) - natural(theta)[4] / (natural(theta)[3] + natural(theta)[4])) < 0.01


def test_bootstrap_coverage_of_a_over_20_seeds():
    """95 % intervals of a cover the truth at least 85 % of the time, for both approaches (200 VP resamples
    per fit rather than the default 1000, to keep the test short; the percentiles are stable at 200)."""
    a_true, _ = exponents(PAPER_LIKE)
    hits = {"vp": 0, "approach2": 0}
    for seed in range(20):
        df = make_points(PAPER_LIKE, budgets=SEVEN, n_sizes=9, noise=0.005, seed=1000 + seed)
        vp = fit_vp(df["n"], df["tokens"], df["loss"], strata=df["budget"], bootstrap_reps=200, seed=seed)
        a2 = fit_isoflops(df, bootstrap=500, seed=seed)["exponents"]["flops"]["a"]
        for key, rec in (("vp", vp["params"]["a"]), ("approach2", a2)):
            _assert_bounded(rec)
            hits[key] += rec["ci_low"] <= a_true <= rec["ci_high"]
    assert hits["vp"] >= 17 and hits["approach2"] >= 17, hits


def test_flat_budget_flagged_not_fatal():
    df = make_points(CHINCHILLA, budgets=SEVEN, n_sizes=9)
    flat = df["budget"] == SEVEN[3]
    x = np.log(df.loc[flat, "n"]) - np.log(df.loc[flat, "n"]).mean()
    # a parabola so flat that its vertex's t interval overflows exp(): this crashed fit_isoflops
    df.loc[flat, "loss"] = 2.5 + 1e-9 * x**2 + 1e-4 * np.sin(7 * x)
    rec = fit_budget(df[flat], 0.95)
    assert not rec["reliable"] and "flat" in rec["reason"]
    # vertex inside the sizes but known only to within e^20 either way: flagged as nearly flat
    x5 = np.linspace(-1, 1, 5)
    nearly = pd.DataFrame({"budget": 1e20, "n": np.exp(20 + x5),
                           "loss": 2.0 + 2e-5 * x5**2 + 1e-4 * np.array([0.3, -0.8, 0.1, 0.9, -0.4])})
    rec = fit_budget(nearly, 0.95)
    assert not rec["reliable"] and "nearly flat" in rec["reason"] and rec["n_opt"]["ci_low"] is None
    res = fit_points(df, fast(bootstrap=20))
    per = {r["budget"]: r for r in res["approach2"]["per_budget"]}
    assert not per[SEVEN[3]]["reliable"] and sum(r["reliable"] for r in per.values()) == 6
    assert any("excluded from the power laws" in w and "flat" in w for w in res["warnings"])
    assert res["approach2"]["exponents"]["usable_budgets"] == 6
    assert abs(res["headline"]["by_basis"]["flops"]["a"]["approach2"]["estimate"] - exponents(CHINCHILLA)[0]) < 0.03


def test_edge_budget_flagged_not_fatal_with_few_budgets_not_estimable():
    df = make_points(CHINCHILLA, budgets=BUDGETS[:4], n_sizes=7, shift={1e19: 2.5})
    res = fit_points(df, fast(bootstrap=20))
    ex = res["approach2"]["exponents"]
    assert ex["usable_budgets"] == 3
    for basis in ("flops", "6ND"):
        for k in ("a", "b"):
            rec = res["headline"]["by_basis"][basis][k]["approach2"]
            assert rec["ci_low"] is None and "not estimable" not in rec["not_estimable"] and "need at least 4" in rec["not_estimable"]
            assert rec["estimate"] is not None
    assert any("not estimable" in w for w in res["warnings"])


def test_two_compute_bases_differ_when_flops_are_not_6nd():
    """With an attention-like term, FLOPs per token grow slower than N: the same law's a differs by basis."""
    df = make_points(PAPER_LIKE, budgets=SEVEN, n_sizes=9)
    fpt = 6 * df["n"] * (df["n"] / 1e9) ** -0.05  # slope of ln fpt on ln N: 0.95, as on the default ladder
    df = df.assign(flops_per_token=fpt)
    rel = fpt_relation(df)
    assert rel["slope"] == pytest.approx(0.95)
    vp = fit_vp(df["n"], df["tokens"], df["loss"], bootstrap_reps=0, budgets=sorted(set(SEVEN)), fpt_relation=rel)
    a6, af = vp["bases"]["6ND"]["a"]["estimate"], vp["bases"]["flops"]["a"]["estimate"]
    assert abs(a6 - exponents(PAPER_LIKE)[0]) < 0.02
    assert af > a6 + 0.005  # N_opt grows faster against the smaller-growing FLOP count


def test_calibration_reports_bias_and_coverage():
    df = make_points(PAPER_LIKE, budgets=SEVEN[::2], n_sizes=7, noise=0.005, seed=3)
    p = [PAPER_LIKE[k] for k in ("E", "A", "B", "alpha", "beta")]
    cal = calibrate(df, p, 0.005, fpt_relation(df), sims=8, vp_bootstrap=100, a2_bootstrap=200, seed=0, level=0.95, delta=1e-3)
    a_true = exponents(PAPER_LIKE)[0]
    vp, a2 = cal["vp"]["6ND"]["a"], cal["approach2"]["flops"]["a"]
    assert vp["truth"] == pytest.approx(a_true) and vp["fitted"] == 8
    assert abs(vp["bias"]) < 0.02 and vp["rmse"] < 0.05 and vp["coverage"] is not None and vp["with_interval"] == 8
    assert a2["fitted"] == 8 and a2["bias"] is not None and abs(a2["bias"]) < 0.05
    assert a2["not_estimable"] == 0  # 4 usable budgets: intervals exist


def test_noise_from_replicates_recovers_sd():
    rng = np.random.default_rng(0)
    cells = [f"c{i}" for i in range(6)]
    main = pd.DataFrame({"cell": cells, "loss": np.exp(1 + 0.02 * rng.standard_normal(6))})
    reps = pd.DataFrame({"cell": cells * 40, "loss": np.exp(1 + 0.02 * rng.standard_normal(240))})
    est = noise_from_replicates(main, reps)
    assert est["dof"] == 240 and abs(est["sigma_log_loss"] - 0.02) < 0.003
    assert noise_from_replicates(main, None) is None


def test_backtest_predicts_largest_budget():
    df = make_points(CHINCHILLA, budgets=SEVEN[:5], n_sizes=9, noise=0.002, seed=4)
    bt = backtest(df, delta=1e-3, reps=200, seed=0, level=0.95)
    assert bt["done"] and bt["held_out_budget"] == pytest.approx(SEVEN[4])
    assert abs(bt["error"]["loss_relative"]) < 0.01 and abs(bt["error"]["log_n_opt"]) < 0.3
    assert bt["predicted"]["loss"]["ci_low"] < bt["predicted"]["loss"]["estimate"] < bt["predicted"]["loss"]["ci_high"]


def test_full_fit_has_all_sections_and_bounded_intervals(tmp_path):
    df = make_points(PAPER_LIKE, budgets=SEVEN[:5], n_sizes=7, noise=0.005, seed=9)
    res = fit_points(df, FitSettings(bootstrap=100, epoch_bootstrap=20, approach2_bootstrap=200, calibration_sims=3,
                                     calibration_bootstrap=20, n_starts=4))
    for basis in ("6ND", "flops"):
        for k in ("a", "b"):
            for est in ("approach3_vp", "approach3_epoch", "approach2"):
                _assert_bounded(res["headline"]["by_basis"][basis][k][est])
    rob = res["robustness"]
    assert [r["left_out"] for r in rob["leave_one_budget_out"]] == sorted(df["budget"].unique().tolist())
    assert {r["variant"].split(" (")[0] for r in rob["sensitivity"]} >= {"as fitted", "plain least squares"}
    assert all(abs(r["a_vp"]["6ND"] - exponents(PAPER_LIKE)[0]) < 0.05 for r in rob["sensitivity"])
    assert res["calibration"]["sims"] == 3 and res["calibration"]["noise"]["source"].startswith("fit residuals")


@pytest.mark.parametrize("seed", range(4))
def test_fit_never_dies_on_a_degenerate_table(seed, tmp_path):
    """Losses unrelated to N and D (pure noise) on a small 3-budget grid: every section is still written."""
    from ehrscale.report.sections import loss_section as summary_text

    rng = np.random.default_rng(seed)
    df = make_points(CHINCHILLA, budgets=BUDGETS[:3], n_sizes=4, span=1.0)
    df["loss"] = df["val_loss"] = 2.0 * np.exp(0.05 * rng.standard_normal(len(df)))
    res = fit_points(df, FitSettings(bootstrap=30, epoch_bootstrap=10, approach2_bootstrap=50, calibration_sims=2,
                                     calibration_bootstrap=10, n_starts=2))
    for basis in ("6ND", "flops"):
        for k in ("a", "b"):
            for rec in res["headline"]["by_basis"][basis][k].values():
                _assert_bounded(rec)
    assert res["robustness"] is not None and "backtest" in res["robustness"]
    text = summary_text(res)
    assert "## Calibration on this grid" in text and "## Backtest" in text and "## Sensitivity of a" in text


def test_training_record_counts_the_shared_stable_phase():
    """WSD: a size's stable phase is trained once (to its largest branch point), then one cooldown per cell."""
    import pandas as pd

    from ehrscale.fit.points import training_record
    from ehrscale.report.sections import SECTIONS

    points = pd.DataFrame({
        "size": ["s", "s", "t"], "tokens": [1000.0, 2000.0, 500.0], "schedule": ["wsd", "wsd", "cosine"],
        "branch_tokens": [800.0, 1600.0, None], "learning_rate": [1e-3, 1e-3, 2e-3], "batch_size": [2.0, 2.0, 4.0]})
    rec = training_record(points)
    assert rec["tokens_independent"] == 3500
    assert rec["tokens_trained"] == 1600 + 200 + 400 + 500  # stable to 1600, two cooldowns; the cosine cell alone
    assert rec["saved_fraction"] == pytest.approx(1 - 2700 / 3500)
    assert rec["sizes"]["s"] == {"learning_rate": 1e-3, "batch_size": 2.0} and rec["schedules"] == ["cosine", "wsd"]
    training_section = next(f for f in SECTIONS if f.__name__ == "_training")
    text = "\n".join(training_section({"training": rec}))
    assert "## Training" in text and "2,700" in text and "3,500" in text and "23 % saved" in text


def test_frontier_with_an_unidentified_scale_reports_no_bound_not_a_crash():
    """Four non-monotone budget minima (measured under bench/rules.py's old rules): the K interval's
    upper end overflows exp(); it is reported as missing (not estimable), not an OverflowError."""
    fit = fit_frontier([1.5e10, 2.64e10, 4.66e10, 8.22e10], [2.1239, 2.1458, 1.4910, 1.3815])
    assert fit["fitted"] and fit["K"]["ci_high"] is None and fit["K"]["estimate"] > 0
    json.dumps(fit, allow_nan=False)  # writable as JSON


def test_seed_replicates_of_one_cell_load_once_per_seed(tmp_path):
    """The default DAG retrains a cell with two other seeds: one cell, two files, both kept; one seed twice is refused."""
    from ehrscale.fit.points import load_points

    base = {"cell": "C1e10_d8L2", "size": "d8L2", "budget": 1e10, "n_params": 5000, "n_params_nonembedding": 2000,
            "tokens": 3e5, "flops": 1e10, "flops_per_token": 3e4, "val_loss": 1.5}
    paths = []
    for i, seed in enumerate((1, 2, 2)):
        paths.append(tmp_path / f"s{i}" / "metrics.json")
        paths[-1].parent.mkdir()
        paths[-1].write_text(json.dumps(base | {"seed": seed, "val_loss": 1.5 + 0.01 * i}))
    reps = load_points(paths[:2], "val_loss", seeds_of_a_cell=True)[0]
    assert list(reps["seed"]) == [1, 2] and list(reps["cell"]) == ["C1e10_d8L2"] * 2
    with pytest.raises(EhrscaleError, match="duplicate cell name.*with one seed: C1e10_d8L2"):
        load_points(paths[1:], "val_loss", seeds_of_a_cell=True)
    with pytest.raises(EhrscaleError, match="duplicate cell name"):
        load_points(paths[:2], "val_loss")  # the main run's cells: one file per cell
