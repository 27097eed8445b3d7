"""The whole DAG on a MEDS dataset ehrscale did not write: the preset config/demo-meds.yaml (the
MIMIC-IV demo through the official MIMIC_IV_MEDS ETL), shrunk to a three-cell grid."""

from __future__ import annotations

import json
import subprocess
import sys

import meds
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from ehrscale.core.config import load_config
from support import ROOT


@pytest.mark.slow
def test_demo_meds_preset_runs_the_whole_dag(tmp_path):
    config = load_config(ROOT / "config" / "demo-meds.yaml")  # the preset as the workflow sees it
    config["dataset"].update(name="e2e-meds", meds_dir=str(ROOT / "tests" / "data" / "mimic-iv-demo-meds"))
    config["grid"].update(budgets=[3e10], sizes=["d8L2", "d12L2", "d16L2"])
    config["train"].update(batch_size=2, min_steps=20, val_windows=16, log_every_steps=10)
    config["tune"] = {"lr_multipliers": []}  # the sweep is tested in test_workflow
    # The fit's own numbers are tested elsewhere: the fewest resamples, no calibration or backtest.
    config["fit"].update(bootstrap=10, epoch_bootstrap=10, approach2_bootstrap=20, calibration_sims=0, backtest=False)
    config["probe"] = {"bootstrap": 50}
    path = tmp_path / "e2e-meds.yaml"
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "config").symlink_to(ROOT / "config")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(path), "--cores", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "results" / "e2e-meds"
    assert not (out / "logs" / "extract.log").exists() and (out / "logs" / "meds_import.log").exists()
    stats = json.loads((out / "tokens" / "stats.json").read_text())
    assert stats["splits"]["train"]["n_subjects"] == 80  # the ETL's own split
    assert json.loads((out / "tokens" / "vocab.json").read_text())["code_map"]["name"] == "generic"
    for task in config["labels"]["tasks"]:
        labels = pq.read_table(out / "labels" / f"{task}.parquet")
        meds.LabelSchema.validate(labels)
        assert labels.num_rows > 10
        assert len(pd.read_parquet(out / "labels" / "examples" / f"{task}.parquet")) == labels.num_rows
    assert len(list(out.glob("runs/*/metrics.json"))) == 3
    assert (out / "summary.md").read_text().startswith("#")
