"""The DAG gives the same bytes in two processes with different hash seeds.

Python salts ``hash()`` of strings per process (``PYTHONHASHSEED``), so iterating a set of
strings, or anything ordered by such a hash, differs from one process to the next while
every in-process comparison still agrees. Each stage here therefore runs as its own
``ehrscale`` subprocess, twice, under two hash seeds, and the outputs are compared byte
for byte: the synthetic CSVs, the MEDS dataset, the tokens, the labels, a tiny trained cell's
val_loss and checkpointed weights, and the fit's JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from support import TASKS
from support.laws import BUDGETS, CHINCHILLA, make_points, write_runs

HASH_SEEDS = ("1", "2")
SIZES = {"t8": {"n_layer": 1, "d_model": 8, "n_head": 1}}
GRID = {"budgets": [2e8], "min_tokens_per_param": 0, "max_tokens_per_param": 1e6, "max_epochs": 100}
TRAIN = {"threads": 1, "log_every_steps": 10, "min_steps": 30, "val_windows": 16, "val_batch_size": 8}


def _ehrscale(hash_seed: str, *args: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ehrscale", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def _assert_same_files(a: Path, b: Path, skip: tuple[str, ...] = ()) -> None:
    fa, fb = _files(a, skip), _files(b, skip)
    assert sorted(fa) == sorted(fb)
    differ = [name for name in fa if fa[name] != fb[name]]
    assert not differ, f"differ between hash seeds: {differ}"


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """synth -> extract -> tokenize -> labels -> train one tiny cell, once per hash seed."""
    roots = {}
    for seed in HASH_SEEDS:
        root = tmp_path_factory.mktemp(f"hashseed{seed}")
        _ehrscale(seed, "synth", str(root / "raw"), "--patients", "300", "--seed", "7")
        _ehrscale(seed, "extract", str(root / "raw"), str(root / "meds"), "--name", "synthetic", "--threads", "1")
        _ehrscale(seed, "tokenize", str(root / "meds"), str(root / "tokens"), "--threads", "1")
        _ehrscale(seed, "labels", str(root / "meds"), str(root / "labels"), "--tasks", str(TASKS))
        _ehrscale(seed, "train", "--tokens", str(root / "tokens"), "--out", str(root / "run"), "--cell", "C2e8_t8",
                  "--sizes", json.dumps(SIZES), "--grid", json.dumps(GRID), "--model", '{"context_length": 32}',
                  "--settings", json.dumps(TRAIN), "--threads", "1")
        roots[seed] = root
    return [roots[s] for s in HASH_SEEDS]


def test_synthetic_csvs_are_byte_identical(pipelines):
    a, b = pipelines
    _assert_same_files(a / "raw", b / "raw")
    assert any((a / "raw" / "hosp").glob("labevents.csv.gz"))


def test_meds_dataset_is_byte_identical(pipelines):
    a, b = pipelines
    _assert_same_files(a / "meds", b / "meds", skip=("extract_summary.json",))  # it records wall seconds
    sa, sb = (json.loads((r / "meds/metadata/extract_summary.json").read_text()) for r in pipelines)
    sa.pop("seconds"), sb.pop("seconds")
    assert sa == sb


def test_tokens_are_byte_identical(pipelines):
    a, b = pipelines
    _assert_same_files(a / "tokens", b / "tokens")
    assert (a / "tokens/train/tokens.npy").stat().st_size > 0


def test_labels_are_byte_identical(pipelines):
    a, b = pipelines
    _assert_same_files(a / "labels", b / "labels")
    assert len(list((a / "labels").glob("*.parquet"))) == len(list(TASKS.glob("*.yaml")))


def test_trained_cell_is_identical(pipelines):
    a, b = pipelines
    ma, mb = (json.loads((r / "run/metrics.json").read_text()) for r in pipelines)
    assert ma["val_loss"] == mb["val_loss"]
    assert ma["train_loss"] == mb["train_loss"]
    la, lb = (pd.read_csv(r / "run/log.csv").drop(columns=["tokens_per_second", "elapsed_s"]) for r in pipelines)
    pd.testing.assert_frame_equal(la, lb, check_exact=True)  # all but the wall-clock columns
    import torch

    wa, wb = (torch.load(r / "run/model.pt", map_location="cpu", weights_only=False)["state_dict"] for r in pipelines)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fit_json_is_byte_identical(tmp_path):
    runs = tmp_path / "runs"
    write_runs(make_points(CHINCHILLA, budgets=BUDGETS[:3], n_sizes=5, span=1.5, noise=0.005), runs, logs=False)
    settings = json.dumps({"bootstrap": 8, "n_starts": 2, "seed": 3})
    for seed in HASH_SEEDS:
        _ehrscale(seed, "fit", "--runs", str(runs), "--out", str(tmp_path / f"fit{seed}"), "--settings", settings)
    a, b = (tmp_path / f"fit{s}" for s in HASH_SEEDS)
    assert (a / "scaling.json").read_bytes() == (b / "scaling.json").read_bytes()
    assert (a / "points.csv").read_bytes() == (b / "points.csv").read_bytes()


def test_saved_figures_are_byte_identical(tmp_path):
    """Every figure goes through report.style.save: its SVG ids must not depend on the process."""
    code = ("import sys, matplotlib.pyplot as plt; from pathlib import Path; from ehrscale.report.style import save\n"
            "fig, ax = plt.subplots(); ax.plot([1, 2, 3], 'o-'); save(fig, Path(sys.argv[1]), 'f')")
    for seed in HASH_SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        (tmp_path / seed).mkdir()
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / seed)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_files(tmp_path / HASH_SEEDS[0], tmp_path / HASH_SEEDS[1])
    assert (tmp_path / HASH_SEEDS[0] / "f.svg").stat().st_size > 1000
