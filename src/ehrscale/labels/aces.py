"""Tasks given as ACES configs (package ``es-aces``), the task language of the MEDS ecosystem.

A task file with ``trigger`` and ``windows`` keys is an ACES task config; ``ehrscale labels`` then
runs ACES itself on every shard of the MEDS dataset (a subject never spans shards) and writes the
same two files as for ehrscale's own task files: the MEDS label file (ACES's ``index_timestamp`` is
the prediction time, ``label`` the boolean value) and ``examples/<task>.parquet`` with the subject's
split and a null ``hadm_id`` (ACES tasks are not tied to an admission id).

A MEDS-DEV task leaves its dataset-specific predicates as ``???``; they come from the dataset's
predicates file (``labels.aces_predicates``, MEDS-DEV's ``datasets/<dataset>/predicates.yaml``), so the
task file runs unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.extract.dataset import split_shards
from ehrscale.extract.splits import SPLITS

log = logging.getLogger(__name__)


def aces_labels(meds_dir: str | Path, task_path: str | Path, predicates_path: str | Path | None = None) -> pd.DataFrame:
    """Labels of an ACES task on every split: subject_id, prediction_time, boolean_value, split, hadm_id."""
    from aces import config, predicates, query
    from omegaconf import DictConfig

    def load():  # a fresh config per shard: ACES's query mutates the config it is given
        try:
            return config.TaskExtractorConfig.load(config_path=Path(task_path),
                                                   predicates_path=Path(predicates_path) if predicates_path else None)
        except Exception as err:  # ACES raises ValueError, KeyError, omegaconf errors...
            raise EhrscaleError(f"ACES task {task_path} (predicates {predicates_path}): {err}") from err

    load()  # a bad config fails before any shard is read
    frames = []
    for split, shards in split_shards(meds_dir).items():
        for shard in shards:
            data_config = DictConfig({"path": str(shard), "standard": "meds"})
            cfg = load()
            try:
                result = query.query(cfg, predicates.get_predicates_df(cfg, data_config))
            except Exception as err:
                raise EhrscaleError(f"ACES task {task_path} on MEDS shard {shard}: {err}") from err
            if len(result) == 0:
                continue
            if "index_timestamp" not in result.columns or "label" not in result.columns:
                raise EhrscaleError(f"ACES task {task_path}: needs a 'label' window and an 'index_timestamp' "
                                    "(the prediction time) in its config")
            df = result.select(["subject_id", "index_timestamp", "label"]).to_pandas()
            frames.append(pd.DataFrame({
                "subject_id": df["subject_id"].astype("int64"),
                "prediction_time": pd.to_datetime(df["index_timestamp"]).astype("datetime64[us]"),
                "boolean_value": df["label"].astype(int) > 0,
                "split": split,
            }))
    if not frames:
        raise EhrscaleError(f"ACES task {task_path}: no examples in any split of {meds_dir}")
    out = pd.concat(frames, ignore_index=True)
    out["hadm_id"] = pd.array([None] * len(out), dtype="Int64")
    assert set(out["split"]) <= set(SPLITS)
    return out.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)
