"""Task definitions: ehrscale's own declarative format, or an ACES config, read from one YAML file.

A task file is either an ACES config (keys ``trigger`` and ``windows``; run by ACES itself, see
:mod:`ehrscale.labels.aces`; ``--predicates`` fills dataset-specific predicates) or ehrscale's own
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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ehrscale.core.errors import EhrscaleError

RULES = {
    "death_in_admission": set(),
    "los_greater_than": {"threshold"},
    "readmission_within": {"window"},
    "event_in_admission": {"code_prefix"},
}
INCLUDE_KEYS = {"in_hospital_at_prediction", "alive_at_prediction", "discharged_alive", "no_event_before_prediction"}
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

    def code_prefixes(self) -> set[str]:
        out = {self.anchor}
        if "no_event_before_prediction" in self.include:
            out.add(self.include["no_event_before_prediction"])
        if self.rule == "event_in_admission":
            out.add(self.params["code_prefix"])
        return out


@dataclass
class AcesTask:
    """A task given as an ACES config (ehrscale.labels.aces); its name is the file's stem."""

    name: str
    path: Path


def is_aces_task(raw) -> bool:
    return isinstance(raw, dict) and "trigger" in raw and "windows" in raw


def read_task_file(path: str | Path):
    """A task file's YAML: the one reader of task files."""
    path = Path(path)
    if not path.is_file():
        raise EhrscaleError(f"task file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise EhrscaleError(f"task file {path} is not valid YAML: {err}") from err


def load_task(path: str | Path) -> TaskSpec | AcesTask:
    """A task file: ehrscale's own format (TaskSpec) or an ACES config (AcesTask)."""
    path = Path(path)
    raw = read_task_file(path)
    if is_aces_task(raw):
        return AcesTask(path.stem, path)
    return TaskSpec.from_dict(raw, str(path), default_name=path.stem)
