"""The unique-data axis: nested subsets of the train patients, the windows over them, and what a cell on
one records (U, R) and trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ehrscale.cli import main
from ehrscale.plan.grid import GridSettings, TrainData, cell_id, plan_cells, single_cell_grid
from ehrscale.tokens.store import TokenSplit, data_subset, subset_targets
from ehrscale.tokens.toy import write_synthetic_tokens
from ehrscale.train.data import WindowStream

torch.set_num_threads(1)
SIZES = {"t16": {"n_layer": 2, "d_model": 16, "n_head": 2}}
SETTINGS = {"threads": 1, "log_every_steps": 5, "min_steps": 50, "val_windows": 16, "val_batch_size": 8}


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return write_synthetic_tokens(tmp_path_factory.mktemp("tok"), vocab_size=48,
                                  n_subjects={"train": 400, "tuning": 40, "held_out": 40}, mean_length=40)


def test_subsets_are_nested_and_only_train_patients(tokens):
    train = TokenSplit(tokens / "train")
    others = set().union(*(TokenSplit(tokens / s).subject_ids.tolist() for s in ("tuning", "held_out")))
    previous = set()
    for f in (1 / 16, 1 / 4, 1 / 2, 1.0):
        ids = set(train.subject_ids[data_subset(train, f)].tolist())
        assert previous <= ids and not ids & others
        assert abs(len(ids) - f * train.n_subjects) < 4 * np.sqrt(train.n_subjects * f * (1 - f)) + 1  # about f of them
        previous = ids
    assert previous == set(train.subject_ids.tolist())  # 1 is the whole split


def test_windows_over_a_subset_read_only_its_patients(tokens):
    train = TokenSplit(tokens / "train")
    patients = data_subset(train, 0.25)
    stream = WindowStream(train, 32, seed=0, patients=patients)
    owner = np.searchsorted(train.offsets, stream.starts, side="right") - 1
    assert set(owner.tolist()) <= set(patients.tolist())
    assert stream.n_targets == subset_targets(train, patients)  # one epoch = every target of the subset once
    whole = WindowStream(train, 32, seed=0)
    assert whole.n_targets == train.n_targets


def test_a_cell_on_a_subset_records_its_unique_tokens_and_epochs(tokens, tmp_path):
    train = TokenSplit(tokens / "train")
    budget = 3e9
    runs = {}
    for f in (1.0, 0.125):
        cell = cell_id("t16", budget, f)
        grid = single_cell_grid(cell, GridSettings())
        assert ("data_fractions" in grid) == (f < 1)  # the whole split keeps the job's params as they were
        out = tmp_path / cell
        assert main(["train", "--tokens", str(tokens), "--out", str(out), "--cell", cell, "--sizes", json.dumps(SIZES),
                     "--grid", json.dumps(grid), "--model", json.dumps({"context_length": 32}),
                     "--settings", json.dumps(SETTINGS)]) == 0
        runs[f] = json.loads((out / "metrics.json").read_text())
    sub = runs[0.125]
    u = subset_targets(train, data_subset(train, 0.125))
    assert sub["unique_tokens"] == u and sub["data_fraction"] == 0.125
    assert sub["epochs"] == pytest.approx(sub["tokens"] / u) and sub["epochs"] > 1  # it repeats its data
    assert runs[1.0]["unique_tokens"] == train.n_targets and runs[1.0]["epochs"] < sub["epochs"]
    assert sub["config_hash"] != runs[1.0]["config_hash"]


def test_the_plan_gives_each_fraction_its_cells_and_epochs(tokens):
    grid = GridSettings(budgets=[3e9], data_fractions=[1.0, 0.125], min_tokens_per_param=0, max_tokens_per_param=1e9)
    data = TrainData.of_store(tokens, grid.data_fractions)
    kept, _ = plan_cells(SIZES, grid, 48, 32, data)
    by_id = {c.id: c for c in kept}
    assert set(by_id) == {"C3e9_t16", "C3e9_t16_u0p125"}
    whole, part = by_id["C3e9_t16"], by_id["C3e9_t16_u0p125"]
    assert part.epochs == pytest.approx(whole.epochs * data.unique(1.0) / data.unique(0.125))
    assert part.chain == "t16_u0p125" and whole.chain == "t16" and "data_fraction" not in whole.as_dict()
    capped = plan_cells(SIZES, GridSettings(budgets=[3e9], data_fractions=[0.125], min_tokens_per_param=0,
                                            max_tokens_per_param=1e9, max_epochs=part.epochs / 2), 48, 32, data)
    assert not capped[0] and "max_epochs" in capped[1][0][1]  # the safety cap still holds


def test_ehrscale_plan_on_a_token_store_uses_each_subsets_exact_unique_tokens(tokens, tmp_path, capsys):
    """The command plans as the workflow does: U of a fraction is its subset's count, not fraction x U."""
    import yaml

    cfg = tmp_path / "grid.yaml"
    cfg.write_text(yaml.safe_dump({"model_sizes": SIZES, "model": {"context_length": 32}, "train": {"max_batch_size": 2},
                                   "grid": {"budgets": [3e9], "data_fractions": [1.0, 0.125], "centre": None,
                                            "min_tokens_per_param": 0, "max_tokens_per_param": 1e9}}))
    out = tmp_path / "plan.json"
    assert main(["plan", "--config", str(cfg), "--tokens-stats", str(tokens), "--json", str(out)]) == 0
    epochs = {r["id"]: r["epochs"] for r in json.loads(out.read_text())["cells"]}
    exact = TrainData.of_store(tokens, [0.125]).unique(0.125)
    assert exact != round(0.125 * TrainData.of_store(tokens, [1.0]).unique(1.0))  # the two estimates differ here
    assert epochs["C3e9_t16_u0p125"] == pytest.approx(epochs["C3e9_t16"] * TrainData.of_store(tokens, [1.0]).unique(1.0) / exact)
    assert main(["plan", "--config", str(cfg), "--tokens-stats", str(tokens / "stats.json")]) == 0
    assert "U is estimated as fraction x train tokens" in capsys.readouterr().out


def test_a_wsd_chain_on_a_subset_runs_as_the_workflow_runs_it(tokens, tmp_path, capsys):
    """The workflow's commands for a chain on a subset: ``stable --size t16_u0p125`` with the size's own
    definition, then the cell's cooldown from it, equal the cell trained as one job, bit for bit."""
    cell = cell_id("t16", 3e9, 0.125)
    grid = json.dumps(single_cell_grid(cell, GridSettings()))
    common = ["--tokens", str(tokens), "--sizes", json.dumps(SIZES), "--model", json.dumps({"context_length": 32}),
              "--settings", json.dumps(SETTINGS | {"schedule": "wsd"})]
    one = tmp_path / "one"
    assert main(["train", *common, "--out", str(one), "--cell", cell, "--grid", grid, "--save-branch"]) == 0
    until = json.loads((one / "metrics.json").read_text())["branch_tokens"]
    state = tmp_path / "stable" / "t16_u0p125.pt"
    assert main(["stable", *common, "--out", str(state), "--size", "t16_u0p125", "--until", str(until)]) == 0
    chained = tmp_path / "chained"
    assert main(["train", *common, "--out", str(chained), "--cell", cell, "--grid", grid, "--branch", str(state)]) == 0
    weights = [torch.load(d / "model.pt", weights_only=False)["state_dict"] for d in (one, chained)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    runs = [json.loads((d / "metrics.json").read_text()) for d in (one, chained)]
    assert runs[0]["val_loss"] == runs[1]["val_loss"] and runs[1]["data_fraction"] == 0.125
    assert runs[1]["epochs"] > 1  # it repeats its subset
    capsys.readouterr()  # a chain of a size that --sizes does not hold is refused in one line
    assert main(["stable", *common, "--out", str(tmp_path / "x.pt"), "--size", "t99_u0p5", "--until", str(until)]) == 2
    assert "'t99' is not in --sizes (t16)" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
