"""The DAG's logic (ehrscale.plan.workflow) without Snakemake: inputs, params and the training command."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from ehrscale.core.errors import EhrscaleError
from ehrscale.plan.grid import stable_chains
from ehrscale.plan.rules import STABLE_INDEPENDENT, branch_point, learning_rate_for
from ehrscale.plan.workflow import Dag, optional_args, train_shell
from support import ROOT

DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def tokens(tmp_path) -> Path:
    """A token store's stats alone: the plan needs the vocabulary size and the train targets."""
    d = tmp_path / "tokens"
    d.mkdir()
    stats = {"vocab_size": 2000, "splits": {s: {"n_subjects": n, "n_tokens": 40_000_000} for s, n in
                                            (("train", 8000), ("tuning", 1000), ("held_out", 1000))}}
    (d / "stats.json").write_text(json.dumps(stats))
    return d


def dag_of(**sections) -> Dag:
    config = copy.deepcopy(DEFAULT)
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return Dag(config, "results/x")


def test_settings_are_sorted_json_without_the_speed_keys():
    dag = dag_of()
    train = json.loads(dag.settings("train", exclude=("threads",)))
    assert "threads" not in train and train["schedule"] == "wsd"
    assert dag.settings("train", exclude=("threads",)) == json.dumps(train, sort_keys=True)
    assert not set(STABLE_INDEPENDENT) & set(json.loads(dag.stable_settings()))


def test_the_training_command_keeps_the_text_trained_runs_recorded():
    """Snakemake reruns a job whose rule's command text changed: these are the texts of the runs trained
    before the rules shared one builder (56cd2b2), and they must not change."""
    cell = ("trap '' TERM USR1; ehrscale train --tokens {input.tokens} --out $(dirname {output.metrics}) "
            "--cell {wildcards.cell} {params.optional} --sizes {params.sizes:q} --grid {params.grid:q} "
            "--model {params.model:q} --settings {params.train:q} --threads {threads} > {log} 2>&1")
    sweep = ("trap '' TERM USR1; ehrscale train --tokens {input.tokens} --out $(dirname {output.metrics}) "
             "--cell {params.cell} --sizes {params.sizes:q} --grid {params.grid:q} --model {params.model:q} "
             "--settings {params.train:q} {params.save_branch} --threads {threads} > {log} 2>&1")
    assert train_shell("{wildcards.cell}") == cell
    assert train_shell("{params.cell}", before="", after="{params.save_branch} ") == sweep


def test_optional_args_name_only_the_inputs_a_job_has():
    class Input:
        lr = "tune/lr_rule.json"
        adopt = "tune/d8L2/x1/metrics.json tune/d8L2/x2/metrics.json"

    assert optional_args(Input()) == "--lr-file tune/lr_rule.json --adopt tune/d8L2/x1/metrics.json tune/d8L2/x2/metrics.json"
    assert optional_args(object()) == ""


def test_wsd_chains_start_from_the_sweep_and_cells_branch_from_their_segment(tokens):
    dag = dag_of()
    grid = dag.planned(tokens)
    assert grid.cells and grid.vocab_size == 2000
    chains = stable_chains(list(grid.cells.values()), dag.train)
    size, points = next((s, p) for s, p in sorted(chains.items()) if len(p) > 1)
    first = dag.stable_inputs(grid, size, points[0])
    assert first["adopt"] == dag.sweep_runs(size) and "start" not in first
    assert first["lr"] == "results/x/tune/lr_rule.json"  # one rule over the whole sweep gives every size its LR
    later = dag.stable_inputs(grid, size, points[1])
    assert later["start"] == dag.stable_path(size, points[0]) and "adopt" not in later
    assert dag.segment(grid, size, points[1]) == (points[0], points[1])
    for cell in (c for c in grid.cells.values() if c.size == size):
        inputs = dag.train_inputs(grid, cell.id)
        assert inputs["branch"] == dag.stable_path(size, branch_point(cell.tokens, dag.train))
        assert ("adopt" in inputs) == (cell.id == dag.tune_cell(grid, size).id)  # only the swept cell copies its run


def test_the_sweep_trains_each_sizes_smallest_cell_at_multiples_of_the_width_rule(tokens):
    dag = dag_of()
    grid = dag.planned(tokens)
    size = sorted({c.size for c in grid.cells.values()})[0]
    cell = dag.tune_cell(grid, size)
    assert cell.tokens == min(c.tokens for c in grid.cells.values() if c.size == size)
    settings = json.loads(dag.tune_settings(grid, size, 2.0))
    assert settings["learning_rate"] == pytest.approx(2.0 * learning_rate_for(cell.d_model, dag.train))
    assert dag.sweep_runs(size) == [f"results/x/tune/{size}/x{m:g}/metrics.json" for m in (0.5, 1, 2, 4)]
    sizes = {c.size for c in grid.cells.values()}
    assert sorted(dag.all_sweep_runs(grid)) == sorted(p for s in sizes for p in dag.sweep_runs(s))
    assert json.loads(dag.size_json(grid, size)) == {size: {"n_layer": cell.n_layer, "d_model": cell.d_model,
                                                            "n_head": cell.n_head, "ffn_hidden": cell.ffn_hidden}}


def test_a_pinned_lr_or_cosine_needs_no_sweep_and_no_branch(tokens):
    dag = dag_of(train={"learning_rate": 0.01, "schedule": "cosine"})
    grid = dag.planned(tokens)
    cell = next(iter(grid.cells))
    assert dag.tune_multipliers == [] and dag.tuned_lr() == {}
    assert dag.train_inputs(grid, cell) == {"tokens": "results/x/tokens"}


def test_resources_follow_the_configured_rows_per_step(tokens):
    """Memory is sized for the cell's own rows per step (the batch rule under train.max_batch_size)."""
    small, large = (dag_of(train={"max_batch_size": m}) for m in (1, 256))
    both = set(small.planned(tokens).cells) & set(large.planned(tokens).cells)
    cell = max(both, key=lambda c: small.planned(tokens).cells[c].n_params)  # the rule gives it 8 rows uncapped
    mem_small = small.cell_resources(small.planned(tokens), cell)["mem_mb"]
    mem_large = large.cell_resources(large.planned(tokens), cell)["mem_mb"]
    assert mem_small < mem_large


def test_replicates_name_only_cells_of_the_grid(tokens):
    dag = dag_of(fit={"replicates": {"cells": [], "budgets": [], "seeds": [1, 2]}})
    grid = dag.planned(tokens)
    assert dag.replicate_metrics(grid) == []
    cell = next(iter(grid.cells))
    dag = dag_of(fit={"replicates": {"cells": [cell], "budgets": [], "seeds": [0, 1, 2]}})
    assert dag.replicate_metrics(grid) == [f"results/x/replicates/{cell}/seed{s}/metrics.json" for s in (1, 2)]
    assert json.loads(dag.replicate_train_settings(3))["seed"] == 3
    with pytest.raises(EhrscaleError, match="not cells of the grid"):
        dag_of(fit={"replicates": {"cells": ["C1e10_nope"], "seeds": [1]}}).replicate_metrics(grid)


def test_default_replicates_are_the_middle_size_of_the_smallest_and_largest_budgets(tokens):
    dag = dag_of()
    grid = dag.planned(tokens)
    budgets = sorted({c.budget for c in grid.cells.values()})
    middles = []
    for budget in (budgets[0], budgets[-1]):
        ladder = sorted((c for c in grid.cells.values() if c.budget == budget), key=lambda c: c.n_params)
        middles.append(ladder[(len(ladder) - 1) // 2].id)
    assert dag.replicate_cells(grid) == middles
    assert dag.replicate_metrics(grid) == [f"results/x/replicates/{c}/seed{s}/metrics.json" for c in middles for s in (1, 2)]
    by_value = dag_of(fit={"replicates": {"cells": [middles[0]], "budgets": [budgets[0]], "seeds": [1]}})
    assert by_value.replicate_cells(grid) == [middles[0]]  # named twice, retrained once
    with pytest.raises(EhrscaleError, match="fit.replicates.budgets: 3.*not a budget"):
        dag_of(fit={"replicates": {"budgets": [3.0], "seeds": [1]}}).replicate_cells(grid)


def test_summary_sections_and_probe_params():
    assert dag_of().summary_sections() == ["results/x/fits/scaling.md", "results/x/tune/lr_rule.md",
                                           "results/x/fits/utility.md"]
    assert dag_of(labels={"tasks": []}, tune={"lr_multipliers": []}).summary_sections() == ["results/x/fits/scaling.md"]
    dag = dag_of()
    assert set(json.loads(dag.embed_settings())) == {"device", "max_train_examples", "max_tuning_examples"}
    assert dag.embed_batch_tokens() == DEFAULT["probe"]["batch_tokens"]
    assert set(json.loads(dag.utility_settings())) <= {"ci_level", "seed", "param_count", "loss_metric"}


def test_the_plan_is_cached_per_version_of_the_tokens(tokens):
    dag = dag_of()
    assert dag.planned(tokens) is dag.planned(tokens)
