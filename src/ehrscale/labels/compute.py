"""Labels of ehrscale's own task files (:class:`ehrscale.labels.tasks.TaskSpec`), computed from a MEDS
dataset's timelines: the admissions (from ``ADMISSION//`` and ``DISCHARGE//`` events sharing a hadm_id),
each task's prediction times, filters and label rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.sql import connect, quote, quote_list
from ehrscale.extract.dataset import split_shards
from ehrscale.extract.splits import SPLITS
from ehrscale.labels.tasks import TaskSpec

ADMISSION, DISCHARGE, DEATH = "ADMISSION//", "DISCHARGE//", "MEDS_DEATH"
def read_events(meds_dir: str | Path, prefixes: set[str]) -> pd.DataFrame:
    """Events with the admission/discharge/death codes or one of ``prefixes``, with their split."""
    import duckdb

    shards = split_shards(meds_dir)
    if not any(shards.values()):
        raise EhrscaleError(f"empty cohort: no parquet shards under {Path(meds_dir) / 'data'}")
    prefixes = set(prefixes) | {ADMISSION, DISCHARGE}
    cond = " OR ".join(["code = 'MEDS_DEATH'"] + [f"starts_with(code, {quote(p)})" for p in sorted(prefixes)])
    parts = []
    for split in SPLITS:
        if shards[split]:
            files = quote_list(shards[split])
            parts.append(
                f"SELECT subject_id, time, code, hadm_id, '{split}' AS split FROM read_parquet({files}) "
                f"WHERE time IS NOT NULL AND ({cond})"
            )
    con = connect(threads=2)
    try:
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
