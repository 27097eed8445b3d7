"""Windows, LR schedule, training outputs, exact resume after SIGTERM, settings errors."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ehrscale.cli import main
from ehrscale.core.errors import EhrscaleError
from ehrscale.core.settings import load_settings
from ehrscale.plan.rules import TrainSettings, batch_size_for, learning_rate_for
from ehrscale.tokens.store import TokenSplit
from ehrscale.tokens.toy import write_synthetic_tokens
from ehrscale.train.data import WindowStream, make_segments, validation_batches
from ehrscale.train.schedule import Schedule
from ehrscale.train.trainer import EXIT_PREEMPTED, LOG_COLUMNS, METRICS_KEYS

torch.set_num_threads(1)

SIZES = {"t16": {"n_layer": 2, "d_model": 16, "n_head": 2}}
GRID = {"budgets": [2e9], "min_tokens_per_param": 0, "max_tokens_per_param": 1e6, "max_epochs": 100}
MODEL = {"context_length": 32}
SETTINGS = {"threads": 1, "log_every_steps": 5, "min_steps": 100, "val_windows": 24, "val_batch_size": 8}
CELL = "C2e9_t16"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return write_synthetic_tokens(tmp_path_factory.mktemp("tok"), vocab_size=48,
                                  n_subjects={"train": 60, "tuning": 20, "held_out": 5}, mean_length=40)


def _train_args(tokens, out, **extra):
    settings = {**SETTINGS, **extra}
    return ["train", "--tokens", str(tokens), "--out", str(out), "--cell", CELL, "--sizes", json.dumps(SIZES),
            "--grid", json.dumps(GRID), "--model", json.dumps(MODEL), "--settings", json.dumps(settings)]


@pytest.fixture(scope="module")
def reference_run(tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert main(_train_args(tokens, out)) == 0
    return out


# ------------------------------------------------------------------ windows


@pytest.mark.parametrize("mode", ["pack", "pad"])
def test_windows_stay_in_patient_and_cover_every_target_once(tokens, mode):
    split = TokenSplit(tokens / "train")
    assert isinstance(split.tokens, np.memmap)
    L = 32
    stream = WindowStream(split, L, seed=3, mode=mode)
    patient_of = np.repeat(np.arange(split.n_subjects), np.diff(split.offsets))
    seen = []
    for r, row in enumerate(stream.rows(0, 0, stream.n_rows(0))):
        assert sum(m for _, m in row) <= L
        if mode == "pad":
            assert len(row) == 1
        for start, m in row:
            assert patient_of[start] == patient_of[start + m]  # inputs and targets within one patient
            seen.extend(range(start + 1, start + m + 1))  # target token indices
    expected = np.setdiff1d(np.arange(len(split.tokens)), split.offsets[:-1])  # all but each patient's first
    assert sorted(seen) == expected.tolist()
    assert len(seen) == split.n_targets


def test_batches_match_tokens_and_order_is_seeded(tokens):
    split = TokenSplit(tokens / "train")
    stream = WindowStream(split, 32, seed=1)
    batch, epoch, row = stream.next_batch(0, 0, 16)
    assert batch.segments is not None  # short patients got packed
    real = batch.targets != -100
    assert int(real.sum()) == batch.n_targets
    # within a segment, target t is input t+1
    same = (batch.segments[:, 1:] == batch.segments[:, :-1]) & real[:, 1:]
    assert torch.equal(batch.targets[:, :-1][same], batch.inputs[:, 1:][same])
    assert (epoch, row) == (0, 16)
    order0 = WindowStream(split, 32, seed=1).plan(0)[0]
    assert np.array_equal(order0, stream.plan(0)[0])
    assert not np.array_equal(order0, stream.plan(1)[0])
    assert not np.array_equal(order0, WindowStream(split, 32, seed=2).plan(0)[0])
    # rolling over the epoch end continues at epoch 1
    n = stream.n_rows(0)
    _, epoch, row = stream.next_batch(0, n - 1, 3)
    assert (epoch, row) == (1, 2)


def test_long_patient_is_split_into_consecutive_segments():
    offsets = np.array([0, 100, 101, 103])
    starts, n_pos = make_segments(offsets, 32)
    assert starts.tolist() == [0, 32, 64, 96, 101]
    assert n_pos.tolist() == [32, 32, 32, 3, 1]


def test_validation_windows_are_fixed(tokens):
    split = TokenSplit(tokens / "tuning")
    a = validation_batches(split, 32, 24, 8)
    b = validation_batches(split, 32, 24, 8)
    assert len(a) == 3
    for x, y in zip(a, b):
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)


# ------------------------------------------------------------------ schedule and rules


def test_cosine_schedule_endpoints():
    peak = 1e-3
    cos = Schedule("cosine", peak, warmup=50, final_fraction=0.1, total=1000)
    assert cos.lr(50) == pytest.approx(peak)
    assert cos.lr(25) == pytest.approx(peak / 2)
    assert cos.lr(1000) == pytest.approx(0.1 * peak)
    assert cos.lr(525) == pytest.approx(0.55 * peak)  # cosine midpoint
    lrs = [cos.lr(t) for t in range(50, 1001, 10)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_wsd_schedule_holds_then_decays_in_one_minus_sqrt():
    peak = 1e-3
    wsd = Schedule("wsd", peak, warmup=50, final_fraction=0.1, total=1000)
    assert wsd.lr(25) == pytest.approx(peak / 2)
    assert wsd.lr(10**9) == pytest.approx(peak)  # stable: no branch yet, whatever the tokens
    assert wsd.lr(800, branch=800) == pytest.approx(peak)
    assert wsd.lr(1000, branch=800) == pytest.approx(0.1 * peak)
    assert wsd.lr(850, branch=800) == pytest.approx(0.1 * peak + 0.9 * peak * (1 - 0.25 ** 0.5))
    assert wsd.lr(30, branch=20) == pytest.approx(peak * 20 / 50 * (1 - (10 / 980) ** 0.5) + 0.1 * peak * (10 / 980) ** 0.5)


def test_batch_and_lr_rules():
    s = TrainSettings(min_steps=1000, batch_tokens_per_param=10.0)
    assert batch_size_for(5_000, 256, s) == 1  # tiny size: one row keeps the step minimum
    assert batch_size_for(256 * 1000 * 32 // 10, 256, s) == 32  # a cell of 10 tokens/param gets 1000 steps
    assert batch_size_for(10**13, 256, s) == 256
    assert batch_size_for(10**6, 256, TrainSettings(batch_size=7)) == 7
    capped = TrainSettings(min_steps=1000, batch_tokens_per_param=10.0, max_batch_size=2)
    assert batch_size_for(256 * 1000 * 32 // 10, 256, capped) == 2
    assert batch_size_for(5_000, 256, capped) == 1  # the cap never raises a batch
    assert learning_rate_for(64, s) == pytest.approx(3e-3)
    assert learning_rate_for(128, s) == pytest.approx(3e-3 * 0.5**0.75)


# ------------------------------------------------------------------ training


def test_outputs_metrics_and_log(reference_run):
    metrics = json.loads((reference_run / "metrics.json").read_text())
    assert tuple(metrics) == METRICS_KEYS
    assert metrics["cell"] == CELL and metrics["mfu"] is None and metrics["device"] == "cpu"
    assert metrics["tokens"] == int(2e9 // metrics["flops_per_token"])  # exactly D
    assert metrics["n_params"] > metrics["n_params_nonembedding"]
    assert np.isfinite(metrics["val_loss"]) and metrics["val_loss"] < np.log(48)
    with open(reference_run / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LOG_COLUMNS
    assert int(rows[-1]["tokens"]) == metrics["tokens"]
    assert float(rows[-1]["lr"]) == pytest.approx(0.1 * metrics["learning_rate"])
    assert (reference_run / "model.pt").exists() and not (reference_run / "checkpoint.pt").exists()
    ck = torch.load(reference_run / "model.pt", weights_only=False)
    assert ck["config"]["d_model"] == 16


def _assert_same_run(a: Path, b: Path):
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("val_loss", "train_loss", "tokens", "config_hash"):
        assert ma[key] == mb[key], key
    sa, sb = (torch.load(d / "model.pt", weights_only=False)["state_dict"] for d in (a, b))
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    la, lb = ([r["train_loss"] for r in csv.DictReader(open(d / "log.csv"))] for d in (a, b))
    assert la == lb


def test_resume_after_signal_hook_is_exact(tokens, reference_run, tmp_path):
    out = tmp_path / "run"
    args = _train_args(tokens, out, stop_after_steps=7)
    assert main(args) == EXIT_PREEMPTED
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    assert main(args) == 0
    _assert_same_run(reference_run, out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_subprocess_then_resume_is_exact(tokens, reference_run, tmp_path, signum):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ehrscale", *_train_args(tokens, out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if " step " in line:  # first progress line: training is under way
            proc.send_signal(signum)
            break
    proc.stderr.read()
    assert proc.wait(timeout=120) == EXIT_PREEMPTED
    assert (out / "checkpoint.pt").exists()
    assert main(_train_args(tokens, out)) == 0  # resume in-process
    _assert_same_run(reference_run, out)


def test_checkpoint_of_another_config_is_set_aside(tokens, tmp_path, reference_run):
    out = tmp_path / "run"
    assert main(_train_args(tokens, out, stop_after_steps=3, seed=5)) == EXIT_PREEMPTED
    assert main(_train_args(tokens, out)) == 0  # not resumed from seed 5's state: a fresh run
    assert list(out.glob("checkpoint.*.pt")), "the other configuration's checkpoint was not kept aside"
    _assert_same_run(reference_run, out)


def test_bad_settings_key_is_named(tokens, tmp_path, capsys):
    with pytest.raises(EhrscaleError, match="train.lr"):
        load_settings(TrainSettings, '{"lr": 0.1}', "train")
    assert main(_train_args(tokens, tmp_path, lr=0.1)) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(_train_args(tokens, tmp_path, window_mode="slide")) == 2


def test_empty_tuning_split_fails_before_training(tmp_path, capsys):
    tokens = write_synthetic_tokens(tmp_path / "tok", vocab_size=48,
                                    n_subjects={"train": 60, "tuning": 0, "held_out": 5}, mean_length=40)
    out = tmp_path / "run"
    assert main(_train_args(tokens, out)) == 2
    assert "tuning" in capsys.readouterr().err
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
