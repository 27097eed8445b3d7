"""Config files validate; bad keys and values fail naming the key; the DAG builds."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ehrscale.config import load_config, validate_config
from ehrscale.errors import EhrscaleError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / ".test").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    load_config(path)


def default() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


PRESETS = [p for p in sorted((ROOT / "config").glob("*.yaml")) if p.name != "config.yaml"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_presets_choose_their_own_batch_cap(path):
    """Snakemake lays --configfile over config/config.yaml, so a key a preset leaves out comes from the
    default; the default's 2-row cap is for its CPU sizes, and each preset states its own."""
    from snakemake.utils import update_config

    from ehrscale.io import load_settings
    from ehrscale.train import TrainSettings

    preset = yaml.safe_load(path.read_text())
    assert "max_batch_size" in preset["train"], f"{path.name}: train.max_batch_size would come from config.yaml"
    merged = default()
    update_config(merged, preset)
    assert load_settings(TrainSettings, merged["train"], "train").max_batch_size == preset["train"]["max_batch_size"]


def test_the_paper_preset_keeps_the_batch_rule():
    from ehrscale.train import TrainSettings

    preset = yaml.safe_load((ROOT / "config" / "mimic-iv.yaml").read_text())
    assert default()["train"]["max_batch_size"] < preset["train"]["max_batch_size"] == TrainSettings().max_batch_size


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["extract"].update(subjects_per_shrd=5), r"unknown key extract\.subjects_per_shrd"),
        (lambda c: c["synthetic"].update(patients=-5), r"key 'synthetic\.patients'"),
        (lambda c: c["dataset"].update(source="ehr"), r"key 'dataset\.source'"),
        (lambda c: c["dataset"].update(name="a/b"), r"key 'dataset\.name'"),
        (lambda c: c["extract"]["tables"].update(omr="maybe"), r"key 'extract\.tables\.omr'"),
        (lambda c: c.update(surprise=1), r"unknown key surprise"),
        (lambda c: c["dataset"].update(source="mimic", raw_dir=""), r"key 'dataset\.raw_dir'"),
    ],
)
def test_bad_config_names_the_key(edit, message):
    config = copy.deepcopy(default())
    edit(config)
    with pytest.raises(EhrscaleError, match=message):
        validate_config(config)


def snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True)


def test_dry_run_prints_the_dag():
    result = snakemake("-n", "--forceall", "--quiet", "rules")  # whatever results/ already holds
    assert result.returncode == 0, result.stderr
    assert "extract" in result.stdout + result.stderr


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extract:\n  subjects_per_shrd: 5\n")
    result = snakemake("-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert "extract.subjects_per_shrd" in result.stdout + result.stderr


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
