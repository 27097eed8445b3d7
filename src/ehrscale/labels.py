"""Clinical task labels from a MEDS dataset, one declarative YAML file per task.

``ehrscale labels MEDS_DIR --task config/tasks/long_los.yaml --out LABELS/long_los.parquet``
(one task, one output: the Snakemake form) or
``ehrscale labels MEDS_DIR LABELS_DIR --tasks config/tasks/*.yaml`` (writes ``LABELS_DIR/<name>.parquet``).

A task file is either an ACES config (keys ``trigger`` and ``windows``; run by ACES itself, see
:mod:`ehrscale.aces_tasks`; ``--predicates`` fills dataset-specific predicates) or ehrscale's own
format below, which needs an admission id (``hadm_id``) and ehrscale's ``ADMISSION//`` and
``DISCHARGE//`` codes; ``config/tasks/aces/`` holds the same four tasks as ACES configs.

Task file format (every key but ``name``/``description`` is checked; unknown keys are an error)::

    name: long_los                    # output file stem; defaults to the YAML file's stem
    description: free text
    prediction:
      anchor: ADMISSION//             # code prefix of the per-admission anchoring event (hadm_id set);
                                      # the anchor time is its earliest time in the admission
                                      # (ADMISSION// = admittime, DISCHARGE// = dischtime)
      offset: 24h                     # prediction_time = anchor time + offset (s, m, h, d units)
    include:                          # all listed filters must hold (each optional)
      in_hospital_at_prediction: true # dischtime > prediction_time (and admittime <= prediction_time)
      alive_at_prediction: true       # no MEDS_DEATH of the subject at or before prediction_time
      discharged_alive: true          # the admission did not end in death
      no_event_before_prediction: ICU_ADMISSION//   # no event with this code prefix in the admission
                                                    # at or before prediction_time
    label:
      rule: los_greater_than          # one of the fixed menu below
      threshold: 7d

Label rules:

* ``death_in_admission``: a ``MEDS_DEATH`` event carrying this hadm_id, or ``DISCHARGE//DIED``.
* ``los_greater_than`` (``threshold``): dischtime - admittime > threshold.
* ``readmission_within`` (``window``): another admission of the subject has admittime in
  ``(max(dischtime, prediction_time), dischtime + window]``.
* ``event_in_admission`` (``code_prefix``): an event with the prefix carrying this hadm_id at a
  time after prediction_time.

An admission is the set of events sharing a hadm_id; admittime is its earliest ``ADMISSION//``
event, dischtime its latest ``DISCHARGE//`` event; admissions lacking either are skipped.

Output, two files with one row per example in the same order (subject_id, prediction_time,
hadm_id):

* ``<labels>/<task>.parquet``: exactly ``meds.LabelSchema`` (``subject_id`` int64,
  ``prediction_time`` timestamp[us], ``boolean_value`` bool; no other column), so any MEDS
  tool reads it.
* ``<labels>/examples/<task>.parquet`` (:func:`examples_path`): ``subject_id``,
  ``prediction_time``, ``hadm_id`` (the admission the example is about) and ``split`` (the
  subject's split in ``metadata/subject_splits.parquet``), what ehrscale needs beside the label.

MEDS reads prediction_time as "data up to and including"; ehrscale's probes
(:mod:`ehrscale.probe_inputs`) are stricter and only use tokens *strictly before* it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrscale.errors import EhrscaleError
from ehrscale.io import atomic_path, check_writable
from ehrscale.splits import SPLITS

log = logging.getLogger(__name__)

RULES = {
    "death_in_admission": set(),
    "los_greater_than": {"threshold"},
    "readmission_within": {"window"},
    "event_in_admission": {"code_prefix"},
}
INCLUDE_KEYS = {"in_hospital_at_prediction", "alive_at_prediction", "discharged_alive", "no_event_before_prediction"}
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
ADMISSION, DISCHARGE, DEATH = "ADMISSION//", "DISCHARGE//", "MEDS_DEATH"
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days|w|week|weeks)\s*$")
_UNIT = {"s": "s", "sec": "s", "m": "min", "min": "min", "h": "h", "hr": "h", "d": "D", "day": "D", "days": "D",
         "w": "W", "week": "W", "weeks": "W"}


def parse_duration(value, where: str) -> pd.Timedelta:
    """'24h', '7d', '30d', '1s', '90m' or 0 -> Timedelta."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return pd.Timedelta(0)
    m = _DURATION.match(str(value))
    if not m:
        raise EhrscaleError(f"{where}: bad duration {value!r} (use e.g. 24h, 7d, 30d, 90m, 1s)")
    return pd.Timedelta(float(m.group(1)), unit=_UNIT[m.group(2)])


@dataclass
class TaskSpec:
    name: str
    anchor: str
    offset: pd.Timedelta
    rule: str
    params: dict = field(default_factory=dict)
    include: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>", default_name: str | None = None) -> "TaskSpec":
        if not isinstance(raw, dict):
            raise EhrscaleError(f"task {source}: must be a mapping")
        extra = set(raw) - {"name", "description", "prediction", "include", "label"}
        if extra:
            raise EhrscaleError(f"task {source}: unknown key(s) {sorted(extra)}")
        name = str(raw.get("name") or default_name or "")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise EhrscaleError(f"task {source}: name {name!r} must be [A-Za-z0-9_.-]+")
        pred = raw.get("prediction") or {}
        if not isinstance(pred, dict) or set(pred) - {"anchor", "offset"}:
            raise EhrscaleError(f"task {source}: 'prediction' takes only anchor and offset, got {pred!r}")
        anchor = pred.get("anchor")
        if not isinstance(anchor, str) or not anchor:
            raise EhrscaleError(f"task {source}: prediction.anchor (a code prefix such as ADMISSION//) is required")
        offset = parse_duration(pred.get("offset", 0), f"task {source}: prediction.offset")
        include = raw.get("include") or {}
        if not isinstance(include, dict) or set(include) - INCLUDE_KEYS:
            bad = sorted(set(include) - INCLUDE_KEYS) if isinstance(include, dict) else include
            raise EhrscaleError(f"task {source}: unknown include filter(s) {bad}; allowed: {sorted(INCLUDE_KEYS)}")
        for k, v in include.items():
            ok = isinstance(v, str) and v if k == "no_event_before_prediction" else isinstance(v, bool)
            if not ok:
                raise EhrscaleError(f"task {source}: include.{k} has bad value {v!r}")
        label = raw.get("label") or {}
        rule = label.get("rule") if isinstance(label, dict) else None
        if rule not in RULES:
            raise EhrscaleError(f"task {source}: label.rule must be one of {sorted(RULES)}, got {rule!r}")
        params = {k: v for k, v in label.items() if k != "rule"}
        if set(params) != RULES[rule]:
            raise EhrscaleError(f"task {source}: label rule {rule} takes {sorted(RULES[rule])}, got {sorted(params)}")
        if rule == "los_greater_than":
            params["threshold"] = parse_duration(params["threshold"], f"task {source}: label.threshold")
        if rule == "readmission_within":
            params["window"] = parse_duration(params["window"], f"task {source}: label.window")
        if rule == "event_in_admission" and not (isinstance(params["code_prefix"], str) and params["code_prefix"]):
            raise EhrscaleError(f"task {source}: label.code_prefix must be a non-empty string")
        return cls(name, anchor, offset, rule, params, dict(include), str(raw.get("description", "")), source)

    @classmethod
    def load(cls, path: str | Path) -> "TaskSpec":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise EhrscaleError(f"task file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise EhrscaleError(f"task file {path} is not valid YAML: {err}") from err
        return cls.from_dict(raw, str(path), default_name=path.stem)

    def code_prefixes(self) -> set[str]:
        out = {self.anchor}
        if "no_event_before_prediction" in self.include:
            out.add(self.include["no_event_before_prediction"])
        if self.rule == "event_in_admission":
            out.add(self.params["code_prefix"])
        return out


# --------------------------------------------------------------------------- reading MEDS


def read_events(meds_dir: str | Path, prefixes: set[str]) -> pd.DataFrame:
    """Events with the admission/discharge/death codes or one of ``prefixes``, with their split."""
    import duckdb

    from ehrscale.meds_data import split_shards

    shards = split_shards(meds_dir)
    if not any(shards.values()):
        raise EhrscaleError(f"empty cohort: no parquet shards under {Path(meds_dir) / 'data'}")
    prefixes = set(prefixes) | {ADMISSION, DISCHARGE}
    cond = " OR ".join(["code = 'MEDS_DEATH'"] + [f"starts_with(code, '{p.replace(chr(39), chr(39) * 2)}')" for p in sorted(prefixes)])
    parts = []
    for split in SPLITS:
        if shards[split]:
            files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in shards[split]) + "]"
            parts.append(
                f"SELECT subject_id, time, code, hadm_id, '{split}' AS split FROM read_parquet({files}) "
                f"WHERE time IS NOT NULL AND ({cond})"
            )
    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        df = con.execute(" UNION ALL ".join(parts)).df()
    except duckdb.Error as err:
        raise EhrscaleError(f"cannot read MEDS data under {meds_dir}: {err}") from err
    finally:
        con.close()
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[us]")
    df["code"] = df["code"].astype(object)
    return df


def admissions_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per hadm_id: subject_id, split, admittime, dischtime, died_in_admission, first_death."""
    ev = events[events["hadm_id"].notna()]
    adm = ev[ev["code"].str.startswith(ADMISSION)].groupby("hadm_id").agg(
        subject_id=("subject_id", "first"), split=("split", "first"), admittime=("time", "min")
    )
    dis = ev[ev["code"].str.startswith(DISCHARGE)]
    dis_t = dis.groupby("hadm_id")["time"].max().rename("dischtime")
    died_hadm = set(dis.loc[dis["code"] == DISCHARGE + "DIED", "hadm_id"]) | set(ev.loc[ev["code"] == DEATH, "hadm_id"])
    out = adm.join(dis_t, how="inner").reset_index()
    out["hadm_id"] = out["hadm_id"].astype("int64")
    out["died_in_admission"] = out["hadm_id"].isin(died_hadm)
    death = events[events["code"] == DEATH].groupby("subject_id")["time"].min().rename("first_death")
    out = out.merge(death, left_on="subject_id", right_index=True, how="left")
    return out.sort_values(["subject_id", "admittime", "hadm_id"]).reset_index(drop=True)


def _first_event_time(events: pd.DataFrame, prefix: str) -> pd.Series:
    ev = events[events["hadm_id"].notna() & events["code"].str.startswith(prefix)]
    s = ev.groupby("hadm_id")["time"].min()
    s.index = s.index.astype("int64")
    return s


def compute_labels(spec: TaskSpec, events: pd.DataFrame, adm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Labels of one task as a DataFrame in LABEL_SCHEMA's column order."""
    adm = admissions_table(events) if adm is None else adm
    if adm.empty:
        raise EhrscaleError("empty cohort: the MEDS dataset has no admissions (ADMISSION// + DISCHARGE// events with hadm_id)")
    a = adm.copy()
    anchor = _first_event_time(events, spec.anchor)
    a["anchor"] = a["hadm_id"].map(anchor)
    a = a[a["anchor"].notna()].copy()
    a["prediction_time"] = (a["anchor"] + spec.offset).astype("datetime64[us]")
    pt = a["prediction_time"]
    keep = pd.Series(True, index=a.index)
    inc = spec.include
    if inc.get("in_hospital_at_prediction"):
        keep &= (a["dischtime"] > pt) & (a["admittime"] <= pt)
    if inc.get("alive_at_prediction"):
        keep &= a["first_death"].isna() | (a["first_death"] > pt)
    if inc.get("discharged_alive"):
        keep &= ~a["died_in_admission"]
    if "no_event_before_prediction" in inc:
        # reindex, not map: map() fails on an empty series of times (a dataset without that code).
        first_by_hadm = _first_event_time(events, inc["no_event_before_prediction"])
        first = pd.Series(first_by_hadm.reindex(a["hadm_id"].to_numpy()).to_numpy(), index=a.index)
        keep &= first.isna() | (first > pt)
    a = a[keep].copy()

    if spec.rule == "death_in_admission":
        y = a["died_in_admission"]
    elif spec.rule == "los_greater_than":
        y = (a["dischtime"] - a["admittime"]) > spec.params["threshold"]
    elif spec.rule == "readmission_within":
        win = spec.params["window"]
        nxt = adm[["subject_id", "hadm_id", "admittime"]].rename(columns={"hadm_id": "other", "admittime": "t2"})
        m = a[["subject_id", "hadm_id", "dischtime", "prediction_time"]].merge(nxt, on="subject_id")
        lo = m[["dischtime", "prediction_time"]].max(axis=1)
        hit = (m["other"] != m["hadm_id"]) & (m["t2"] > lo) & (m["t2"] <= m["dischtime"] + win)
        y = a["hadm_id"].isin(set(m.loc[hit, "hadm_id"]))
    elif spec.rule == "event_in_admission":
        ev = events[events["hadm_id"].notna() & events["code"].str.startswith(spec.params["code_prefix"])]
        m = a[["hadm_id", "prediction_time"]].merge(ev[["hadm_id", "time"]].astype({"hadm_id": "int64"}), on="hadm_id")
        y = a["hadm_id"].isin(set(m.loc[m["time"] > m["prediction_time"], "hadm_id"]))
    else:  # pragma: no cover - validated in TaskSpec
        raise EhrscaleError(f"unknown rule {spec.rule}")
    out = pd.DataFrame(
        {
            "subject_id": a["subject_id"].astype("int64").to_numpy(),
            "prediction_time": a["prediction_time"].to_numpy(),
            "boolean_value": np.asarray(y, dtype=bool),
            "split": a["split"].astype(str).to_numpy(),
            "hadm_id": a["hadm_id"].astype("int64").to_numpy(),
        }
    )
    return out.sort_values(["subject_id", "prediction_time", "hadm_id"]).reset_index(drop=True)


@dataclass
class AcesTask:
    """A task given as an ACES config (ehrscale.aces_tasks); its name is the file's stem."""

    name: str
    path: Path


def load_task(path: str | Path):
    """A task file: ehrscale's own format (TaskSpec) or an ACES config (AcesTask)."""
    import yaml

    from ehrscale.aces_tasks import is_aces_task

    path = Path(path)
    if path.is_file():
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise EhrscaleError(f"task file {path} is not valid YAML: {err}") from err
        if is_aces_task(raw):
            return AcesTask(path.stem, path)
    return TaskSpec.load(path)


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


def make_labels(meds_dir: str | Path, specs: list, outputs: list[Path], predicates: str | Path | None = None
                ) -> dict[str, dict]:
    """Compute and write each task (a TaskSpec, or an AcesTask: ehrscale.aces_tasks); returns per-task
    summary (n, positives, prevalence per split)."""
    for out in outputs:  # before reading the dataset, not after
        check_writable(out)
        check_writable(examples_path(out))
    own = [s for s in specs if isinstance(s, TaskSpec)]
    prefixes = set().union(*(s.code_prefixes() for s in own)) if own else set()
    events = read_events(meds_dir, prefixes) if own else None
    adm = admissions_table(events) if own else None
    summary = {}
    for spec, out in zip(specs, outputs):
        if isinstance(spec, AcesTask):
            from ehrscale.aces_tasks import aces_labels

            df = aces_labels(meds_dir, spec.path, predicates)
        else:
            df = compute_labels(spec, events, adm)
        write_labels(df, out)
        summary[spec.name] = {
            "n": int(len(df)),
            "positives": int(df["boolean_value"].sum()),
            "prevalence": float(df["boolean_value"].mean()) if len(df) else None,
            "by_split": {s: int((df["split"] == s).sum()) for s in SPLITS},
        }
        log.info("%s: %d labels, %d positive -> %s", spec.name, len(df), summary[spec.name]["positives"], out)
    return summary


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("meds_dir", help="MEDS dataset root")
    parser.add_argument("labels_dir", nargs="?", default=None,
                        help="output directory: LABELS_DIR/<task>.parquet and LABELS_DIR/examples/<task>.parquet")
    parser.add_argument("--tasks", "--task", dest="tasks", nargs="+", required=True,
                        help="task YAML file(s), or a directory of them")
    parser.add_argument("--predicates", default=None,
                        help="ACES predicates YAML overriding an ACES task's (e.g. MEDS-DEV's dataset predicates)")
    parser.add_argument("--out", default=None, help="output parquet file (exactly one task; instead of LABELS_DIR); "
                        "its examples file goes to examples/<name> beside it")


def _expand_task_paths(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
            if not found:
                raise EhrscaleError(f"no task YAML files in {p}")
            paths += found
        else:
            paths.append(p)
    return paths


def run(args: argparse.Namespace) -> int:
    specs = [load_task(p) for p in _expand_task_paths(args.tasks)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise EhrscaleError(f"duplicate task names: {names}")
    if args.out is not None:
        if len(specs) != 1 or args.labels_dir is not None:
            raise EhrscaleError("--out takes exactly one task and no LABELS_DIR")
        outputs = [Path(args.out)]
    else:
        if args.labels_dir is None:
            raise EhrscaleError("give LABELS_DIR or --out")
        outputs = [Path(args.labels_dir) / f"{s.name}.parquet" for s in specs]
    summary = make_labels(args.meds_dir, specs, outputs, args.predicates)
    print(json.dumps(summary))
    return 0
