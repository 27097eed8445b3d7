"""The tune step: one LR rule fitted to the whole sweep (ehrscale.train.tune). It recovers a known
rule, its intervals cover at their stated rate, it falls back to each size's argmin where the sweep
cannot identify a rule, it never leaves the LRs a size's sweep survived, and the CLI writes the record and its
summary section."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from ehrscale.core.errors import EhrscaleError
from ehrscale.train.tune import lr_rule, read_tuned_lr

SIZES = np.geomspace(2.5e3, 2.0e5, 12)
MULTS = (0.5, 1.0, 2.0, 4.0)
TRUTH = {"lr0": 0.013, "gamma": -0.4, "q": 0.04}


def sweep(rng, sigma=0.01, mults=MULTS, sizes=SIZES, truth=TRUTH):
    """Sweep runs from a known rule: a width-like base LR (with the wrong exponent) times each multiplier,
    ln loss a parabola in ln LR around lr*(N), plus Gaussian noise of SD sigma on ln loss."""
    n_ref = float(np.exp(np.log(sizes).mean()))
    runs = []
    for i, n in enumerate(sizes):
        best = truth["lr0"] * (n / n_ref) ** truth["gamma"]
        base = 0.01 * (n / n_ref) ** -0.2
        level = 0.4 - 0.05 * math.log(n / n_ref)
        for m in mults:
            lr = base * m
            ln_loss = level + truth["q"] * (math.log(lr) - math.log(best)) ** 2 + sigma * rng.standard_normal()
            runs.append({"size": f"s{i}", "cell": f"C1e10_s{i}", "n_params": int(round(n)), "learning_rate": lr,
                         "val_loss": math.exp(ln_loss), "tokens": 1000})
    return runs, n_ref


def test_the_rule_recovers_a_known_law_and_gives_every_size_its_lr():
    runs, n_ref = sweep(np.random.default_rng(0))
    rec = lr_rule(runs)
    rule = rec["rule"]
    assert rec["method"] == "rule" and rule["fitted"] and rule["n_in_basin"] == 48
    assert abs(rule["gamma"]["estimate"] - TRUTH["gamma"]) < 0.05
    assert rule["lr_at_n_ref"]["estimate"] == pytest.approx(TRUTH["lr0"], rel=0.1)
    assert rule["n_ref"] == pytest.approx(n_ref, rel=1e-4)  # N rounded to whole parameters
    assert rule["residual_log_loss_rms"] < 0.012  # the noise, sigma = 0.01
    for size, r in rec["sizes"].items():
        ideal = rule["lr_at_n_ref"]["estimate"] * (r["n_params"] / rule["n_ref"]) ** rule["gamma"]["estimate"]
        assert r["rule_learning_rate"] == pytest.approx(ideal)
        lrs = [c["learning_rate"] for c in r["candidates"]]
        assert min(lrs) <= r["learning_rate"] <= max(lrs)


def test_the_rules_intervals_cover_at_their_stated_rate():
    rng = np.random.default_rng(1)
    hits = {"gamma": 0, "lr_at_n_ref": 0}
    sims = 200
    for _ in range(sims):
        rule = lr_rule(sweep(rng, sigma=0.02)[0])["rule"]
        for key, truth in (("gamma", TRUTH["gamma"]), ("lr_at_n_ref", TRUTH["lr0"])):
            hits[key] += rule[key]["ci_low"] <= truth <= rule[key]["ci_high"]
    for key, n in hits.items():  # 95 % intervals: 200 draws put the rate within about 0.92-0.98
        assert 0.90 <= n / sims <= 0.99, (key, n / sims)


def test_the_rule_is_steadier_than_the_argmin_under_noise():
    """What the rule is for: another seed moves it less than it moves the per-size argmin."""
    rng = np.random.default_rng(2)
    moves_rule, moves_argmin = [], []
    for _ in range(20):
        a, b = (lr_rule(sweep(rng, sigma=0.02)[0])["sizes"] for _ in range(2))
        for s in a:
            moves_rule.append(abs(math.log(a[s]["learning_rate"] / b[s]["learning_rate"])))
            moves_argmin.append(abs(math.log(a[s]["argmin_learning_rate"] / b[s]["argmin_learning_rate"])))
    assert np.mean(moves_rule) < 0.5 * np.mean(moves_argmin)


def test_runs_outside_the_basin_are_left_out():
    runs, _ = sweep(np.random.default_rng(3), sigma=0.005)
    runs[3]["val_loss"] *= 3.0  # a diverged run at the top LR of the first size
    rule = lr_rule(runs)["rule"]
    assert rule["n_in_basin"] == 47 and abs(rule["gamma"]["estimate"] - TRUTH["gamma"]) < 0.05


def test_a_rule_outside_a_sizes_sweep_is_clamped_to_it():
    truth = TRUTH | {"lr0": 0.2}  # every size's optimum far above the LRs swept
    rec = lr_rule(sweep(np.random.default_rng(4), sigma=0.002, truth=truth)[0])
    for r in rec["sizes"].values():
        assert r["clamped"] and r["learning_rate"] == max(c["learning_rate"] for c in r["candidates"])


def test_a_rule_never_goes_above_an_lr_its_size_diverged_at():
    """Loss climbs far more steeply above the optimum (divergence) than below it: the rule's LR must
    stay at or below the highest LR at which the size's own sweep stayed in the basin."""
    runs, _ = sweep(np.random.default_rng(8), sigma=0.002, truth=TRUTH | {"lr0": 0.019})
    runs[3]["val_loss"] *= 3.0  # the first size diverged at its top LR, above its rule optimum
    first = lr_rule(runs)["sizes"]["s0"]
    lrs = sorted(c["learning_rate"] for c in first["candidates"])
    assert lrs[2] < first["rule_learning_rate"] < lrs[3]  # the parabola alone would train between the two
    assert first["clamped"] and first["learning_rate"] == lrs[2] and first["basin_learning_rates"] == [lrs[0], lrs[2]]


@pytest.mark.parametrize("mults, sizes, reason", [((1.0, 2.0), SIZES, "3+ LRs"), (MULTS, SIZES[:1], "2+ sizes")])
def test_a_sweep_that_cannot_fit_the_rule_takes_each_sizes_argmin(mults, sizes, reason):
    rec = lr_rule(sweep(np.random.default_rng(5), mults=mults, sizes=sizes)[0])
    assert rec["method"] == "argmin" and reason in rec["rule"]["reason"]
    for r in rec["sizes"].values():
        assert r["learning_rate"] == r["argmin_learning_rate"] and not r["clamped"]


def test_bad_sweep_runs_are_named():
    runs, _ = sweep(np.random.default_rng(6))
    del runs[0]["n_params"]
    with pytest.raises(EhrscaleError, match="C1e10_s0.*n_params"):
        lr_rule(runs)
    runs, _ = sweep(np.random.default_rng(6))
    runs[1]["val_loss"] = float("nan")
    with pytest.raises(EhrscaleError, match="positive and finite"):
        lr_rule(runs)
    with pytest.raises(EhrscaleError, match="no sweep runs"):
        lr_rule([])


def test_the_cli_writes_the_record_and_its_summary_section(tmp_path):
    runs, _ = sweep(np.random.default_rng(7))
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run))
    out, summary = tmp_path / "tune" / "lr_rule.json", tmp_path / "tune" / "lr_rule.md"
    proc = subprocess.run([sys.executable, "-m", "ehrscale", "tune", "--runs", *map(str, paths), "--out", str(out),
                           "--summary", str(summary)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "LR rule: lr*(N)" in proc.stderr
    rec = json.loads(out.read_text())
    assert read_tuned_lr(out, "s0") == rec["sizes"]["s0"]["learning_rate"]
    text = summary.read_text()
    assert text.startswith("## Learning rate") and f"^{rec['rule']['gamma']['estimate']:.3f}" in text
    assert len(re.findall(r"\n\| s\d+ \|", text)) == 12
    with pytest.raises(EhrscaleError, match="no learning rate for size 'd99L2'"):
        read_tuned_lr(out, "d99L2")
    with pytest.raises(EhrscaleError, match="not a tune result"):
        read_tuned_lr(paths[0], "s0")
