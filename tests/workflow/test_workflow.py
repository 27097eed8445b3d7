"""The whole DAG on the real MIMIC-IV demo (WSD schedule with the LR sweep), then Snakemake's
caching: a rerun does nothing; adding a larger budget trains only the new cells, extending each
size's stable chain; inserting a budget between others retrains no existing cell."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ehrscale.core.config import load_config
from support import ROOT


def write_config(workdir: Path, budgets: list[float], replicates: dict | None = None) -> Path:
    config = load_config(ROOT / "config" / "demo.yaml")  # the preset as the workflow sees it
    config["dataset"].update(name="e2e", raw_dir=str(ROOT / "tests" / "data" / "mimic-iv-demo"))
    config["grid"].update(budgets=budgets, sizes=["d8L2", "d12L2", "d16L2", "d24L2"], min_tokens_per_param=0.5)
    config["train"].update(batch_size=2, min_steps=20, val_windows=32, log_every_steps=10, schedule="wsd")
    config["tune"] = {"lr_multipliers": [1.0, 2.0]}
    config["fit"].update(bootstrap=10, epoch_bootstrap=10, approach2_bootstrap=50, calibration_sims=2, calibration_bootstrap=10)
    config["probe"] = {"bootstrap": 50, "min_positives": 2}
    config["fit"]["replicates"] = replicates or {"cells": [], "budgets": []}  # the default's are tested below
    path = workdir / "e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "config").symlink_to(ROOT / "config")  # the default configfile and task files
    return workdir


@pytest.fixture(scope="module")
def first_run(workdir):
    config = write_config(workdir, [1e10, 3e10])
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir / "results" / "e2e", config


def test_dag_produces_every_stage(first_run):
    results, _ = first_run
    assert (results / "meds" / "metadata" / "subject_splits.parquet").exists()
    assert (results / "tokens" / "vocab.json").exists()
    for task in ("in_hospital_mortality", "long_los", "readmission_30d", "icu_admission"):
        labels = pd.read_parquet(results / "labels" / f"{task}.parquet")
        assert len(labels) and labels.boolean_value.dtype == bool
    metrics = sorted(results.glob("runs/*/metrics.json"))
    assert len(metrics) >= 4
    for path in metrics:
        m = json.loads(path.read_text())
        assert m["val_loss"] > 0 and m["device"] == "cpu"
        assert (path.parent / "log.csv").exists() and (path.parent / "model.pt").exists()
    lr_rule = json.loads((results / "tune" / "lr_rule.json").read_text())
    assert lr_rule["method"] == "argmin" and "3+ LRs" in lr_rule["rule"]["reason"]  # 2 LRs per size: no rule
    for path in metrics:  # every cell is a cooldown from its size's stable chain, at the size's tuned LR
        m = json.loads(path.read_text())
        tuned = lr_rule["sizes"][m["size"]]
        assert m["schedule"] == "wsd" and m["learning_rate"] == tuned["learning_rate"]
        assert 0.75 * m["tokens"] <= m["branch_tokens"] < m["tokens"]
        assert len(tuned["candidates"]) == 2
    assert sorted(results.glob("stable/*/T*.pt"))
    for size in {json.loads(p.read_text())["size"] for p in metrics}:  # the sweep's winner is its smallest cell, copied
        tuned = lr_rule["sizes"][size]
        winner = [d for d in (results / "tune" / size).iterdir()
                  if json.loads((d / "metrics.json").read_text())["learning_rate"] == tuned["learning_rate"]]
        assert len(winner) == 1
        cell = json.loads((winner[0] / "metrics.json").read_text())["cell"]
        assert (results / "runs" / cell / "model.pt").read_bytes() == (winner[0] / "model.pt").read_bytes()
        first = min(results.glob(f"stable/{size}/T*.pt"), key=lambda q: int(q.stem[1:]))
        assert first.read_bytes() == (winner[0] / "branch.pt").read_bytes()
    scaling = json.loads((results / "fits" / "scaling.json").read_text())
    assert scaling  # the fit ran over the trained cells
    points = pd.read_csv(results / "fits" / "points.csv")
    assert len(points) == len(metrics)
    assert (results / "summary.md").read_text().startswith("#")
    for name in ("isoflops", "optimal_scaling", "parametric_contours", "loss_curves", "loss_frontier", "profile_landscape"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 1000
    assert scaling["calibration"]["noise"]["source"].startswith("fit residuals")  # replicates turned off here
    assert "## Learning rate" in (results / "summary.md").read_text()
    assert not (results / "replicates").exists()
    # the probe stage: every cell embeds and probes every task; one baseline per task; utility laws
    tasks = ("in_hospital_mortality", "long_los", "readmission_30d", "icu_admission")
    for path in metrics:
        probe_dir = results / "probes" / path.parent.name
        assert (probe_dir / "embeddings.npz").exists()
        rec = json.loads((probe_dir / "metrics.json").read_text())
        assert set(rec["tasks"]) == set(tasks)
        assert all(r["status"] in ("ok", "skipped") for r in rec["tasks"].values())
        assert all((probe_dir / f"{t}.predictions.parquet").exists() for t in tasks)
    for t in tasks:
        assert json.loads((results / "baseline" / f"{t}.json").read_text())["task"] == t
    utility = json.loads((results / "fits" / "utility.json").read_text())
    assert set(utility["tasks"]) == set(tasks)
    assert "## Clinical utility" in (results / "summary.md").read_text()
    sections = [(results / name).read_text() for name in ("fits/scaling.md", "tune/lr_rule.md", "fits/utility.md")]
    assert (results / "summary.md").read_text() == "".join(sections)  # each rule's section, in order
    for name in ("utility_compute", "utility_loss"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 1000
    for log in ("extract", "tokenize", "fit"):
        assert (results / "logs" / f"{log}.log").exists()
        assert (results / "benchmarks" / f"{log}.tsv").exists()


def test_rerun_does_nothing(first_run, workdir):
    _, config = first_run
    result = snakemake(workdir, config, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_new_probe_settings_rerun_the_utility_fit_but_not_the_loss_fit(first_run, workdir):
    """The loss laws and the utility laws are two rules: new probe records refit only the second."""
    _, config_path = first_run
    config = yaml.safe_load(config_path.read_text())
    config["probe"]["bootstrap"] = 60
    changed = workdir / "probe-changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, changed, "-n")
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, re.M))
    assert {"probe", "baseline", "fit_utility", "summary"} <= set(jobs)
    assert "fit" not in jobs and "embed" not in jobs and "train" not in jobs


def _mtimes(results: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in results.glob(pattern)}


def test_new_budgets_retrain_no_cell_and_extend_the_chains(first_run, workdir):
    """A larger budget (1e11) extends each size's stable chain; one inserted between others (2e10)
    adds a branch point inside a chain, so exactly the segment after it reruns from there, and
    reproduces its state bit for bit. No trained cell, and no size's LR sweep, reruns."""
    import torch

    results, _ = first_run
    before = {p.parent.name: p.stat().st_mtime_ns for p in results.glob("runs/*/metrics.json")}
    embeddings_before = {p.parent.name: p.stat().st_mtime_ns for p in results.glob("probes/*/embeddings.npz")}
    chains_before = _mtimes(results, "stable/*/T*.pt")
    states = {k: torch.load(results / k, weights_only=False)["model"] for k in chains_before}
    tune_before = _mtimes(results, "tune/*.json")
    config = write_config(workdir, [1e10, 2e10, 3e10, 1e11])
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    after = {p.parent.name: p.stat().st_mtime_ns for p in results.glob("runs/*/metrics.json")}
    assert {cell: after[cell] for cell in before} == before, "an already-trained cell was retrained"
    embedded = {p.parent.name: p.stat().st_mtime_ns for p in results.glob("probes/*/embeddings.npz")}
    assert {cell: embedded[cell] for cell in before} == {c: embeddings_before[c] for c in before}, "a cell was re-embedded"
    new = set(after) - set(before)
    assert new and all(cell.startswith(("C1e11_", "C2e10_")) for cell in new)
    assert any(c.startswith("C1e11_") for c in new) and any(c.startswith("C2e10_") for c in new)
    tune_after = _mtimes(results, "tune/*.json")
    assert {k: tune_after[k] for k in tune_before} == tune_before, "a size's LR was retuned"
    # the chains: which existing segments had to rerun (the one right after each inserted point)
    chains_after = _mtimes(results, "stable/*/T*.pt")
    assert len(chains_after) > len(chains_before)
    expected = set()
    for size in {k.split("/")[1] for k in chains_after}:
        points = sorted(int(k.rsplit("/T", 1)[1][:-3]) for k in chains_after if k.split("/")[1] == size)
        for prev, point in zip(points, points[1:]):
            key = f"stable/{size}/T{point}.pt"
            if key in chains_before and f"stable/{size}/T{prev}.pt" not in chains_before:
                expected.add(key)
    rerun = {k for k in chains_before if chains_after[k] != chains_before[k]}
    assert rerun == expected, "a stable segment reran without a new branch point before it (or did not rerun)"
    for key in rerun:
        state = torch.load(results / key, weights_only=False)["model"]
        assert all(torch.equal(states[key][k], state[k]) for k in state)
    assert "rule tune_run" not in result.stdout + result.stderr
    points = pd.read_csv(results / "fits" / "points.csv")
    assert len(points) == len(after)  # the fit reran over old and new cells


def test_html_report_has_every_figure(first_run, workdir):
    _, config = first_run
    report = workdir / "report.html"
    result = snakemake(workdir, config, "--report", str(report))
    assert result.returncode == 0, result.stderr[-4000:]
    html = report.read_text(errors="replace")
    for name in ("isoflops", "optimal_scaling", "parametric_contours", "loss_curves", "loss_frontier", "summary",
                 "utility_compute", "utility_loss"):
        assert name in html


def test_seed_replicates_of_a_budgets_middle_size_feed_the_calibration(first_run, workdir):
    results, _ = first_run
    ladder = sorted((json.loads(p.read_text()) for p in results.glob("runs/C1e10_*/metrics.json")), key=lambda m: m["n_params"])
    cell = ladder[(len(ladder) - 1) // 2]["cell"]
    config = write_config(workdir, [1e10, 2e10, 3e10, 1e11], replicates={"cells": [], "budgets": ["first"], "seeds": [0, 1]})
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    rep = json.loads((results / "replicates" / cell / "seed1" / "metrics.json").read_text())
    assert rep["seed"] == 1 and rep["cell"] == cell
    assert not (results / "replicates" / cell / "seed0").exists()  # the main run is seed 0 already
    noise = json.loads((results / "fits" / "scaling.json").read_text())["calibration"]["noise"]
    assert noise["source"] == "seed replicates" and noise["cells"] == 1 and noise["dof"] == 1
    summary = (results / "summary.md").read_text()
    assert f"SD of its log loss across seeds, is {noise['sigma_log_loss']:.4f} (1 cells retrained" in summary


def test_a_unique_data_axis_adds_chains_on_subsets_and_the_data_constrained_fit(first_run, workdir):
    """grid.data_fractions through the whole DAG: each size gets a stable chain on a quarter of the train
    patients, its cells record U and R, no whole-data cell reruns, and the fit sees the repeated cells."""
    results, _ = first_run
    config_path = write_config(workdir, [1e10, 2e10, 3e10, 1e11])
    whole = snakemake(workdir, config_path)  # the whole-data grid first (a no-op after the tests above)
    assert whole.returncode == 0, whole.stderr[-4000:]
    before = _mtimes(results, "runs/*/metrics.json")
    config = yaml.safe_load(config_path.read_text())
    config["grid"]["data_fractions"] = [1.0, 0.25]
    config["fit"].update(repeat_bootstrap=10, repeat_calibration_sims=2, repeat_calibration_bootstrap=10)
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, config_path)
    assert result.returncode == 0, result.stderr[-4000:]
    after = _mtimes(results, "runs/*/metrics.json")
    assert {k: after[k] for k in before} == before, "a whole-data cell was retrained"
    new = [k.split("/")[1] for k in set(after) - set(before)]
    assert new and all(cell.endswith("_u0p25") for cell in new)
    assert {p.name for p in (results / "stable").iterdir()} >= {c.split("_", 1)[1] for c in new}  # their chains
    full = json.loads((results / sorted(before)[0]).read_text())["unique_tokens"]
    for cell in new:
        m = json.loads((results / "runs" / cell / "metrics.json").read_text())
        assert m["data_fraction"] == 0.25 and 0 < m["unique_tokens"] < full
        assert m["epochs"] == pytest.approx(m["tokens"] / m["unique_tokens"])
    points = pd.read_csv(results / "fits" / "points.csv")
    assert sorted(points.loc[points["data_fraction"] < 1, "cell"]) == sorted(new)
    fits = json.loads((results / "fits" / "scaling.json").read_text())
    dc = fits["data_constrained"]
    assert dc["fitted"] or "not estimable" in dc["reason"]
