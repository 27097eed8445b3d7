"""Config files validate; bad keys and values fail naming the key; the DAG builds."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ehrscale.core.config import load_config, validate_config
from ehrscale.core.errors import EhrscaleError
from support import ROOT

CONFIGS = sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / ".test").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    load_config(path)


def default() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


PRESETS = [p for p in sorted((ROOT / "config").glob("*.yaml")) if p.name != "config.yaml"]


def redundant_keys(preset: dict, base: dict, where: str = "") -> list[str]:
    """Keys of ``preset`` whose value is already ``base``'s (mappings compared key by key)."""
    out = []
    for key, value in preset.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out += redundant_keys(value, base[key], f"{where}{key}.")
        elif key in base and base[key] == value:
            out.append(f"{where}{key}")
    return out


def test_redundant_keys_finds_a_planted_copy():
    assert redundant_keys({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 1, "c": 3}, "d": [1]}) == ["a.b", "d"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_presets_are_overlays_of_their_differences(path):
    """A preset holds only what differs from config/config.yaml, and load_config lays it over the
    default exactly as Snakemake's --configfile does."""
    from snakemake.utils import update_config

    preset = yaml.safe_load(path.read_text())
    assert not redundant_keys(preset, default()), f"{path.name} repeats the default's values"
    merged = default()
    update_config(merged, preset)
    assert load_config(path) == merged
    assert load_config(ROOT / "config" / "config.yaml") == default()


def test_the_paper_preset_is_short_and_keeps_the_batch_rule():
    """The default's 2-row cap is for its CPU sizes: the paper-scale preset restores the rule's own cap,
    the demos inherit the default's."""
    from ehrscale.plan.rules import TrainSettings

    path = ROOT / "config" / "mimic-iv.yaml"
    assert len(path.read_text().splitlines()) < 60
    assert load_config(path)["train"]["max_batch_size"] == TrainSettings().max_batch_size > default()["train"]["max_batch_size"]
    for demo in ("demo.yaml", "demo-meds.yaml"):
        assert load_config(ROOT / "config" / demo)["train"]["max_batch_size"] == default()["train"]["max_batch_size"]


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
