"""`snakemake --profile slurm`, as typed from the repository root, on a real single-node SLURM.

One SLURM run of a small grid (demo data) through the repository's ``slurm`` profile and
workflow profile, with two training jobs interrupted while they train: one requeued by
SLURM (``scontrol requeue``: SIGTERM, then the same job id runs again, as on preemption),
one sent SIGTERM (``scancel --signal=TERM``: the job exits 75 and Snakemake resubmits it).
Then one local ``--cores`` run of the same config; every cell's loss must be equal.

The CI differs from the user's profile only by command-line flags, because this cluster
has no accounting database: ``--slurm-no-account`` (no account to guess),
``--slurm-status-command squeue`` (sacct without accounting hangs; MinJobAge keeps finished
jobs in squeue), and ``--slurm-init-seconds-before-status-checks 5`` (the default 40 s
would make a small test slow). Root only: it installs and starts SLURM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ehrscale.core.config import load_config
from support import ROOT
from support.slurm import Cluster, install

SIZES = ["d8L2", "d12L2", "d16L2"]
BUDGETS = [1e10, 3e10]
REQUEUED = "C3e10_d8L2"  # preempted: scontrol requeue
SIGNALLED = "C3e10_d16L2"  # scancel --signal=TERM: exit 75, Snakemake resubmits
CI_FLAGS = ["--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5"]



def test_profile_resolves_from_the_repository_root(tmp_path):
    """`snakemake --profile slurm -n` as typed in a fresh clone: ./slurm and the workflow profile."""
    workdir = make_workdir(tmp_path / "w")
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "--directory", str(workdir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in result.stderr
    assert "rule extract:" in result.stdout + result.stderr


def test_own_profile_keeps_the_workflow_profile(tmp_path):
    """A user's ~/.config/snakemake/slurm serves from any directory; the per-rule settings still apply."""
    user_profile = tmp_path / "home" / ".config" / "snakemake" / "slurm"
    user_profile.mkdir(parents=True)
    (user_profile / "config.yaml").write_text("executor: slurm\njobs: 10\ndefault-resources:\n  slurm_partition: userpart\n")
    workdir = make_workdir(tmp_path / "w")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")}
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--profile", "slurm",
                             "-n", "--directory", str(workdir)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"workflow specific profile {ROOT}/profiles/default" in result.stderr
    assert "slurm_partition=userpart" in result.stdout + result.stderr


def write_config(workdir: Path) -> Path:
    config = load_config(ROOT / "config" / "demo.yaml")  # the preset as the workflow sees it
    config["dataset"].update(name="e2e", raw_dir=str(ROOT / "tests" / "data" / "mimic-iv-demo"))
    config["labels"]["tasks"] = ["in_hospital_mortality"]
    config["grid"].update(budgets=BUDGETS, sizes=SIZES)
    # batch_size 2: a few hundred steps per cell, so a job can be caught while it trains. Cosine
    # without the LR sweep: one job per cell (the WSD chains' jobs are tested in test_workflow).
    config["train"].update(batch_size=2, val_windows=32, log_every_steps=10, progress_seconds=1.0, schedule="cosine",
                           min_steps=1)
    config["tune"] = {"lr_multipliers": []}
    # The fit's own numbers are tested elsewhere: the fewest resamples, no calibration or backtest.
    config["fit"].update(bootstrap=10, epoch_bootstrap=10, approach2_bootstrap=20, calibration_sims=0, backtest=False)
    config["probe"] = {"bootstrap": 50}
    path = workdir / "e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def make_workdir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config").symlink_to(ROOT / "config")  # the default configfile and task files
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if sys.platform != "linux" or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run the SLURM test: run it as root on Linux")
        pytest.skip("starts a SLURM cluster: Linux as root only (as in CI)")
    install()
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _squeue(cluster: Cluster) -> list[dict]:
    """Every job slurmctld still knows (MinJobAge keeps finished ones): id, state, comment."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%k|%r"], capture_output=True, text=True,
                         timeout=20, env=cluster.env).stdout
    return [dict(zip(("id", "state", "comment", "reason"), line.split("|", 3))) for line in out.splitlines() if line]


def _job_of(cluster: Cluster, cell: str, state: str = "RUNNING") -> str | None:
    for job in _squeue(cluster):
        if job["comment"] == f"rule_train_wildcards_{cell}" and job["state"] == state:
            return job["id"]
    return None


def _training(log: Path) -> bool:
    """The trainer is in its loop (its signal handler installed) once it has logged step 1."""
    return log.exists() and re.search(r"\] step [1-9]", log.read_text(errors="replace")) is not None


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("slurm_run") / "w")
    config = write_config(workdir)
    console = workdir / "snakemake.out"
    # Exactly as a user types it, from the repository root; results go to --directory.
    cmd = ["timeout", "-k", "20", "900", sys.executable, "-m", "snakemake", "--profile", "slurm",
           "--directory", str(workdir), "--configfile", str(config), "--verbose", *CI_FLAGS]
    logs = workdir / "results" / "e2e" / "logs" / "train"
    interrupted: dict[str, str] = {}
    pending: set[str] = set()
    started = time.monotonic()
    with open(console, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=cluster.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                for cell, action in ((REQUEUED, "requeue"), (SIGNALLED, "signal")):
                    job = _job_of(cluster, cell)
                    if cell not in interrupted and job and _training(logs / f"{cell}.log"):
                        if action == "requeue":
                            cluster.scontrol("requeue", job)
                            pending.add(job)
                        else:
                            subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=20, env=cluster.env)
                        interrupted[cell] = job
                for job in list(pending):  # a requeued job may wait for a BeginTime: start it as soon as it can run
                    if any(j["id"] == job and j["state"] == "PENDING" for j in _squeue(cluster)):
                        cluster.scontrol("update", f"JobId={job}", "StartTime=now")
                        pending.discard(job)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    text = console.read_text(errors="replace")
    assert proc.returncode == 0, text[-6000:] + cluster.logs()
    jobs = _squeue(cluster)
    for job in jobs:  # what SLURM allocated to each training job
        if job["comment"].startswith("rule_train_"):
            job["scontrol"] = cluster.scontrol("show", "job", job["id"])
    return {"workdir": workdir, "config": config, "console": text, "interrupted": interrupted,
            "jobs": jobs, "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def local_run(slurm_run, tmp_path_factory):
    """The same config with --cores, reusing the SLURM run's tokens (training is what differs)."""
    workdir = make_workdir(tmp_path_factory.mktemp("local_run") / "w")
    src = slurm_run["workdir"] / "results" / "e2e"
    for part in ("raw", "meds", "tokens", "labels"):
        if (src / part).exists():
            shutil.copytree(src / part, workdir / "results" / "e2e" / part)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(slurm_run["config"]), "--cores", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def _metrics(workdir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (workdir / "results" / "e2e").glob("runs/*/metrics.json")}


def test_every_training_job_ran_on_slurm(slurm_run):
    jobs = slurm_run["jobs"]
    cells = set(_metrics(slurm_run["workdir"]))
    assert len(cells) == len(SIZES) * len(BUDGETS)
    done = [j["comment"] for j in jobs if j["state"] == "COMPLETED"]
    trained = {c.removeprefix("rule_train_wildcards_") for c in done if c.startswith("rule_train_wildcards_")}
    assert trained == cells
    # the default seed replicates (fit.replicates) are SLURM jobs too, one per (cell, seed)
    replicates = {c for c in done if c.startswith("rule_train_replicate_wildcards_")}
    assert len(replicates) == len(list((slurm_run["workdir"] / "results" / "e2e").glob("replicates/*/*/metrics.json")))
    assert replicates
    # Heavy rules are SLURM jobs too; fit is a localrule and ran on this host.
    comments = {j["comment"] for j in jobs}
    assert {"rule_extract", "rule_tokenize"} <= comments and "rule_fit" not in comments
    assert (slurm_run["workdir"] / "results" / "e2e" / "summary.md").exists()


def test_training_jobs_ask_slurm_for_a_gpu(slurm_run):
    calls = [line for line in slurm_run["console"].splitlines()
             if line.startswith("sbatch call:") and "rule_train_wildcards_" in line]
    assert calls
    for call in calls:
        call = call.split(" --wrap=")[0]
        assert " --gpus=1" in call and " --cpus-per-gpu=1" in call and " --requeue" in call, call
        assert re.search(r" -t \d+ ", call) and re.search(r" --mem \d+ ", call), call
        assert "--gres" not in call and "--cpus-per-task" not in call, call
    for job in slurm_run["jobs"]:
        if job["comment"].startswith("rule_train_") and job["state"] == "COMPLETED":
            assert "TresPerJob=gres:gpu:1" in job["scontrol"] and "Requeue=1" in job["scontrol"], job["scontrol"]


def test_slurm_grid_matches_local_run(slurm_run, local_run):
    on_slurm, local = _metrics(slurm_run["workdir"]), _metrics(local_run)
    assert set(on_slurm) == set(local)
    for cell in local:
        assert on_slurm[cell]["val_loss"] == local[cell]["val_loss"], cell
        assert on_slurm[cell]["tokens"] == local[cell]["tokens"], cell
    # The fits agree too (timings aside).
    timing = ["wall_seconds", "tokens_per_second", "job_wall_seconds"]
    points = [pd.read_csv(w / "results/e2e/fits/points.csv").drop(columns=timing).sort_values("cell", ignore_index=True)
              for w in (slurm_run["workdir"], local_run)]
    pd.testing.assert_frame_equal(*points)


def test_preempted_jobs_resume_from_their_checkpoint(slurm_run, local_run):
    assert set(slurm_run["interrupted"]) == {REQUEUED, SIGNALLED}, "a job finished before it could be interrupted"
    logs = slurm_run["workdir"] / "results" / "e2e" / "logs" / "train"
    for cell in (REQUEUED, SIGNALLED):
        assert re.search(r"resuming at step [1-9]", (logs / f"{cell}.log").read_text()), cell
        assert not (slurm_run["workdir"] / "results" / "e2e" / "runs" / cell / "checkpoint.pt").exists()
    # The requeued job kept its id and ran twice; the signalled one failed and was resubmitted.
    jobs = slurm_run["jobs"]
    requeued = [j for j in jobs if j["comment"] == f"rule_train_wildcards_{REQUEUED}"]
    assert [j["id"] for j in requeued] == [slurm_run["interrupted"][REQUEUED]]
    signalled = [j for j in jobs if j["comment"] == f"rule_train_wildcards_{SIGNALLED}"]
    assert {j["state"] for j in signalled} == {"FAILED", "COMPLETED"}, signalled
    local = _metrics(local_run)
    on_slurm = _metrics(slurm_run["workdir"])
    for cell in (REQUEUED, SIGNALLED):
        assert on_slurm[cell]["val_loss"] == local[cell]["val_loss"]
    print(f"SLURM run: {slurm_run['seconds']:.0f}s")
