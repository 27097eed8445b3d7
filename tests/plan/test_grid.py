"""IsoFLOPs grid: cell ids, D = C / flops_per_token, drops with reasons, the plan CLI."""

import json
import re

import pytest
import yaml

from ehrscale.cli import main
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.settings import load_settings
from ehrscale.model.config import DEBUG_SIZES, GPTConfig, flops_per_token
from ehrscale.plan.grid import (
    GridSettings,
    cell_id,
    find_cell,
    format_budget,
    job_resources,
    parse_cell_id,
    plan_cells,
    single_cell_grid,
)
from ehrscale.plan.rules import TrainSettings
from support import ROOT


def test_cell_ids_are_wildcard_and_path_safe():
    assert format_budget(3e11) == "3e11"
    assert format_budget(1.5e12) == "1p5e12"
    assert format_budget(1e18) == "1e18"
    assert cell_id("d32L2", 3e11) == "C3e11_d32L2"
    kept, dropped = plan_cells(DEBUG_SIZES, GridSettings(budgets=[3e11, 1e12, 3e12]), 2000, 256, None)
    ids = [c.id for c in kept] + [c.id for c, _ in dropped]
    assert len(ids) == len(set(ids)) == 3 * len(DEBUG_SIZES)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+", i) for i in ids)


def test_tokens_are_budget_over_flops_per_token():
    kept, _ = plan_cells(DEBUG_SIZES, GridSettings(budgets=[1e12], min_tokens_per_param=0, max_tokens_per_param=1e9), 2000, 256, None)
    for c in kept:
        cfg = GPTConfig.from_size(DEBUG_SIZES[c.size], 2000)
        assert c.flops_per_token == flops_per_token(cfg)
        assert c.tokens == int(1e12 // c.flops_per_token)
        assert c.n_params > c.n_params_nonembedding
        assert c.epochs is None


def test_drops_have_reasons():
    grid = GridSettings(budgets=[3e11, 3e12], min_tokens_per_param=2, max_tokens_per_param=100, max_epochs=2)
    train_tokens = 2_000_000
    kept, dropped = plan_cells(DEBUG_SIZES, grid, 2000, 256, train_tokens)
    reasons = {c.id: r for c, r in dropped}
    assert any("< min_tokens_per_param" in r for r in reasons.values())
    assert any("> max_tokens_per_param" in r for r in reasons.values())
    assert any("> max_epochs" in r for r in reasons.values())
    for c in kept:
        assert 2 <= c.tokens_per_param <= 100 and c.epochs <= 2
    big = next(c for c, r in dropped if "min_tokens_per_param" in r)
    assert big.tokens_per_param < 2
    assert len(kept) + len(dropped) == 2 * len(DEBUG_SIZES)
    # a dropped cell cannot be trained, and says why
    with pytest.raises(EhrscaleError, match="dropped"):
        find_cell(big.id, DEBUG_SIZES, grid, 2000, 256, train_tokens)
    with pytest.raises(EhrscaleError, match="not in the grid"):
        find_cell("C9e99_nope", DEBUG_SIZES, grid, 2000, 256, train_tokens)


def test_facts_budgets_have_interior_cells():
    """The debug ladder brackets the measured CPU optima (23k, 50k, 110k params) at each budget."""
    grid = GridSettings(budgets=[3e11, 1e12, 3e12])
    kept, _ = plan_cells(DEBUG_SIZES, grid, 2000, 256, None)
    for budget, opt in ((3e11, 23e3), (1e12, 50e3), (3e12, 110e3)):
        ns = [c.n_params for c in kept if c.budget == budget]
        assert min(ns) < opt < max(ns), (budget, ns)


def test_bad_grid_key_is_named():
    with pytest.raises(EhrscaleError, match="grid.max_epoch"):
        load_settings(GridSettings, '{"max_epoch": 3}', "grid")


def test_plan_cli(tmp_path, capsys):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(model_sizes="debug", grid={"budgets": [3.0e11, 1.0e12], "max_epochs": 4}, model={"context_length": 256})
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"vocab_size": 2000, "splits": {"train": {"n_subjects": 100, "n_tokens": 1_000_100}}}))
    out = tmp_path / "plan.json"
    rc = main(["plan", "--config", str(cfg), "--tokens-stats", str(stats), "--tokens-per-second", "20000", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "C3e11_d8L2" in text and "GPU-hours" in text
    plan = json.loads(out.read_text())
    assert plan["train_tokens"] == 1_000_000
    assert all(c["epochs"] <= 4 for c in plan["cells"])
    assert any("max_epochs" in d["reason"] for d in plan["dropped"])
    rc = main(["plan", "--config", str(cfg), "--vocab-size", "2000", "--mfu", "0.4", "--peak-flops", "989e12"])
    assert rc == 0 and "GPU-hours" in capsys.readouterr().out


def test_plan_budget_calls_fit_module(monkeypatch, capsys, tmp_path):
    import sys
    import types

    calls = []
    fake = types.ModuleType("ehrscale.fit.optimal")
    fake.optimal_for_budget = lambda path, budget, unique=None: calls.append((path, budget)) or {"n_params": 1.5e5, "tokens": 3e6, "loss": 2.1}
    fake.format_plan = lambda result: "\n".join(f"{k}: {v:.4g}" for k, v in result.items())
    monkeypatch.setitem(sys.modules, "ehrscale.fit.optimal", fake)
    fits = tmp_path / "scaling.json"
    assert main(["plan", "--budget", "1e13", "--fits", str(fits)]) == 0
    assert calls == [(str(fits), 1e13)]
    out = capsys.readouterr().out
    assert "n_params" in out and "1.5e+05" in out
    assert main(["plan", "--budget", "1e13"]) == 2  # --budget needs --fits


@pytest.mark.parametrize("size, budget, fraction", [("d32L2", 3e11, 1.0), ("n1B", 1.5e12, 0.25), ("x-1.2", 7.25e20, 0.0625)])
def test_cell_id_round_trips(size, budget, fraction):
    assert parse_cell_id(cell_id(size, budget, fraction)) == (size, budget, fraction)
    assert ("_u" in cell_id(size, budget, fraction)) == (fraction < 1)  # the whole split keeps the old ids


def test_parse_cell_id_rejects_garbage():
    with pytest.raises(EhrscaleError, match="not a cell id"):
        parse_cell_id("d32L2")


def test_single_cell_grid_keeps_exactly_that_cell():
    grid = load_settings(GridSettings, single_cell_grid("C1e12_d16L2", GridSettings()), "grid")
    kept, dropped = plan_cells(DEBUG_SIZES, grid, 2000, 256, 10)  # would be many epochs
    assert [c.id for c in kept] == ["C1e12_d16L2"] and not dropped


def test_job_resources_scale_with_the_cell():
    wide = GridSettings(budgets=[3e12], max_tokens_per_param=1e9)
    small, big = (find_cell(cell_id(s, 3e12), DEBUG_SIZES, wide, 2000, 256, None)
                  for s in ("d8L2", "d96L3"))
    cluster = {"tokens_per_second": 1e4, "runtime_factor": 2.0, "min_runtime_minutes": 1}
    train = TrainSettings(max_batch_size=1)
    r_small, r_big = (job_resources(c, 256, 2000, cluster, train) for c in (small, big))
    assert r_small["runtime"] == -(-small.tokens / 1e4 * 2 // 60)
    assert r_small["runtime"] > r_big["runtime"]  # same FLOPs: the small model sees more tokens
    assert r_big["mem_mb"] > r_small["mem_mb"] > 2048
    by_mfu = job_resources(big, 256, 2000, {"mfu": 0.5, "peak_flops": 1e12, "runtime_factor": 1, "min_runtime_minutes": 0},
                           train)
    assert by_mfu["runtime"] == -(-3e12 / 0.5e12 // 60)


def test_budgets_that_share_a_cell_id_are_rejected():
    with pytest.raises(EhrscaleError, match="coincide"):
        plan_cells(DEBUG_SIZES, GridSettings(budgets=[1e12, 1.00000001e12]), 2000, 256, None)


def test_plan_sizes_the_paper_grid_for_a_cluster(capsys):
    """On the paper-scale preset, plan gives the job count, GPU-hours and longest job from its `cluster` section."""
    config = ROOT / "config" / "mimic-iv.yaml"
    assert main(["plan", "--config", str(config), "--vocab-size", "30000"]) == 0
    text = capsys.readouterr().out
    kept = int(re.search(r"(\d+) cells kept", text).group(1))
    chains = re.search(rf"jobs: {kept} cells \(cooldowns\) \+ (\d+) stable segments in (\d+) chains(?: \+ \d+ LR-tune runs)?, 1 GPU each", text)
    assert chains and int(chains.group(2)) <= int(chains.group(1)) <= kept
    cosine, wsd = (float(x.replace(",", "")) for x in re.search(
        r"GPU-hours at MFU 0.3 of \S+ FLOP/s: cosine ([\d,.]+), wsd ([\d,.]+) \(this config: wsd\)", text).groups())
    assert 0 < wsd < cosine  # the stable phases are shared
    hours = wsd
    longest = re.search(r"longest job: (C\S+) ([\d.]+)h \(asks the scheduler for ([\d.]+)h", text)
    assert longest and float(longest.group(3)) >= float(longest.group(2)) and hours > float(longest.group(2))


def test_the_paper_preset_keeps_five_sizes_at_every_budget_on_real_mimic_data(tmp_path, capsys):
    """About 2.67e8 train tokens (the paper's MIMIC-IV): the top budgets repeat data, and the planner centres
    their sizes on the data-constrained optimum instead of dropping them; the plan prints each cell's epochs."""
    stats = {"vocab_size": 30000, "splits": {"train": {"n_subjects": 240_000, "n_tokens": 267_240_000},
                                             "tuning": {"n_subjects": 30_000, "n_tokens": 33_000_000},
                                             "held_out": {"n_subjects": 30_000, "n_tokens": 33_000_000}}}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    assert main(["plan", "--config", str(ROOT / "config" / "mimic-iv.yaml"), "--tokens-stats", str(tmp_path),
                 "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    plan = json.loads((tmp_path / "plan.json").read_text())
    per_budget = {}
    for c in plan["cells"]:
        per_budget[c["budget"]] = per_budget.get(c["budget"], 0) + 1
    assert len(per_budget) == 6 and min(per_budget.values()) >= 5, per_budget
    assert max(c["epochs"] for c in plan["cells"]) > 4  # the top budgets do repeat data
    assert all(f"{c['epochs']:.2f}" in out for c in plan["cells"])  # each cell's epochs, printed


def test_centring_moves_up_only_where_the_optimum_would_repeat_data():
    from ehrscale.plan.grid import CentreSettings

    centre = CentreSettings(params=1e5, budget=1e12, exponent=0.6)
    free = centre.optimum(1e12)
    assert centre.optimum(1e12, unique_tokens=10 * 1e12 / (6 * free)) == free  # enough data: unchanged
    scarce = centre.optimum(1e12, unique_tokens=0.05 * 1e12 / (6 * free))
    assert scarce > 1.5 * free  # 20 epochs at the free optimum: compute moves to parameters
    assert 1e12 / (6 * scarce) < 20 * 0.05 * 1e12 / (6 * free)  # and it repeats less


def test_the_default_grid_is_unchanged_by_the_data_axis():
    """The default run never repeats data: its cells, with data_fractions [1.0], are the cells without the axis."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    grid = load_settings(GridSettings, config["grid"], "grid")
    assert grid.data_fractions == [1.0]
    train = load_settings(TrainSettings, config["train"], "train")
    kept, _ = plan_cells(DEBUG_SIZES, grid, 501, 256, 6_860_943, train=train)
    assert len(kept) == 48 and all("_u" not in c.id and c.epochs < 1 for c in kept)
    blind = plan_cells(DEBUG_SIZES, grid, 501, 256, None, train=train)[0]  # no knowledge of the data at all
    assert [c.id for c in kept] == [c.id for c in blind]
