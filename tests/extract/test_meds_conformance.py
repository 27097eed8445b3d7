"""Every MEDS output ehrscale writes passes the ``meds`` package's own schemas.

For both default inputs (the synthetic cohort and the real MIMIC-IV demo), through the
CLI as the workflow runs it: each data shard (meds.DataSchema), metadata/codes.parquet
(CodeMetadataSchema), metadata/subject_splits.parquet (SubjectSplitSchema),
metadata/dataset.json (DatasetMetadataSchema) and each task's label file (LabelSchema).
"""

from __future__ import annotations

import json
from pathlib import Path

import meds
import pyarrow.parquet as pq
import pytest

from ehrscale.cli import main
from support import DEMO, TASKS


@pytest.fixture(scope="module", params=["synthetic", "mimic-iv-demo"])
def outputs(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    raw = DEMO
    if request.param == "synthetic":
        raw = root / "raw"
        assert main(["synth", str(raw), "--patients", "200", "--seed", "3"]) == 0
    assert main(["extract", str(raw), str(root / "meds"), "--name", request.param, "--threads", "1"]) == 0
    assert main(["labels", str(root / "meds"), str(root / "labels"), "--tasks", str(TASKS)]) == 0
    return root


def test_every_data_shard_is_meds(outputs):
    shards = sorted((outputs / "meds" / meds.data_subdirectory).glob("*/*.parquet"))
    assert {p.parent.name for p in shards} == {meds.train_split, meds.tuning_split, meds.held_out_split}
    for shard in shards:
        meds.DataSchema.validate(pq.read_table(shard))  # the whole file, extra hadm_id column included


def test_metadata_is_meds(outputs):
    root = outputs / "meds"
    meds.CodeMetadataSchema.validate(pq.read_table(root / meds.code_metadata_filepath))
    meds.SubjectSplitSchema.validate(pq.read_table(root / meds.subject_splits_filepath))
    meds.DatasetMetadataSchema.validate(json.loads((root / meds.dataset_metadata_filepath).read_text()))


def test_label_files_are_meds(outputs):
    files = sorted((outputs / "labels").glob("*.parquet"))
    assert {p.stem for p in files} == {p.stem for p in TASKS.glob("*.yaml")}
    for f in files:
        table = pq.read_table(f)
        meds.LabelSchema.validate(table)
        assert set(table.schema.names) <= set(meds.LabelSchema.schema().names), f  # nothing MEDS does not define
        assert table.num_rows > 0
        examples = pq.read_table(outputs / "labels" / "examples" / f.name)
        assert examples.num_rows == table.num_rows
        assert examples["subject_id"].equals(table["subject_id"])
