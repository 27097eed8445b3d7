"""The label files every later stage reads: the MEDS label file and its examples file beside it.

Output, two files with one row per example in the same order (subject_id, prediction_time,
hadm_id):

* ``<labels>/<task>.parquet``: exactly ``meds.LabelSchema`` (``subject_id`` int64,
  ``prediction_time`` timestamp[us], ``boolean_value`` bool; no other column), so any MEDS
  tool reads it.
* ``<labels>/examples/<task>.parquet`` (:func:`examples_path`): ``subject_id``,
  ``prediction_time``, ``hadm_id`` (the admission the example is about) and ``split`` (the
  subject's split in ``metadata/subject_splits.parquet``), what ehrscale needs beside the label.

MEDS reads prediction_time as "data up to and including"; ehrscale's probes
(:mod:`ehrscale.probe.inputs`) are stricter and only use tokens *strictly before* it.
"""

from __future__ import annotations

from pathlib import Path

import meds
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrscale.core.files import atomic_path

# The label file: MEDS's own label schema, its required columns (ehrscale's labels are boolean;
# meds rejects an optional value column that is present but all null).
LABEL_SCHEMA = pa.schema([meds.LabelSchema.schema().field(c) for c in ("subject_id", "prediction_time",
                                                                       "boolean_value")])
EXAMPLES_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("prediction_time", pa.timestamp("us")),
        ("hadm_id", pa.int64()),  # null for ACES tasks
        ("split", pa.string()),
    ]
)
LABEL_COLUMNS = tuple(LABEL_SCHEMA.names)


def examples_path(labels_path: str | Path) -> Path:
    """Where the examples file of ``<dir>/<task>.parquet`` lives: ``<dir>/examples/<task>.parquet``."""
    labels_path = Path(labels_path)
    return labels_path.parent / "examples" / labels_path.name


def write_labels(df: pd.DataFrame, path: str | Path) -> None:
    """Write the MEDS label file ``path`` and its examples file (:func:`examples_path`)."""
    labels = pa.Table.from_pandas(df[LABEL_SCHEMA.names], schema=LABEL_SCHEMA, preserve_index=False)
    meds.LabelSchema.validate(labels)
    examples = pa.Table.from_pandas(df[EXAMPLES_SCHEMA.names], schema=EXAMPLES_SCHEMA, preserve_index=False)
    with atomic_path(path) as tmp, atomic_path(examples_path(path)) as tmp_examples:
        pq.write_table(labels, tmp)
        pq.write_table(examples, tmp_examples)
