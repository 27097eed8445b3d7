"""Helpers that build tiny MEDS datasets for the tokenizer and label tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DATA_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
        ("text_value", pa.string()),
        ("hadm_id", pa.int64()),
    ]
)


def ev(subject_id, time, code, value=None, hadm_id=None, text=None) -> dict:
    return {
        "subject_id": subject_id,
        "time": None if time is None else pd.Timestamp(time),
        "code": code,
        "numeric_value": value,
        "text_value": text,
        "hadm_id": hadm_id,
    }


def write_meds(root: str | Path, events: list[dict], splits: dict[int, str], shards_per_split: int = 1) -> Path:
    """Write ``events`` as a MEDS dataset under ``root``; ``splits`` maps subject_id -> split."""
    root = Path(root)
    df = pd.DataFrame(events, columns=DATA_SCHEMA.names)
    df["_static"] = df["time"].notna()  # False (static) sorts first
    df["_ord"] = np.arange(len(df))
    df = df.sort_values(["subject_id", "_static", "time", "_ord"], kind="stable").drop(columns=["_static", "_ord"])
    for split in ("train", "tuning", "held_out"):
        d = root / "data" / split
        d.mkdir(parents=True, exist_ok=True)
        sids = sorted(s for s, sp in splits.items() if sp == split)
        for k, chunk in enumerate(np.array_split(np.asarray(sids, dtype=np.int64), shards_per_split)):
            part = df[df["subject_id"].isin(chunk.tolist())]
            if len(part) == 0 and k > 0:
                continue
            table = pa.Table.from_pandas(part.reset_index(drop=True), schema=DATA_SCHEMA, preserve_index=False)
            pq.write_table(table, d / f"{k}.parquet")
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "subject_id": pa.array(list(splits), pa.int64()),
                "split": pa.array(list(splits.values()), pa.string()),
            }
        ),
        meta / "subject_splits.parquet",
    )
    codes = sorted(set(df["code"]))
    pq.write_table(
        pa.table(
            {
                "code": pa.array(codes, pa.string()),
                "description": pa.array([None] * len(codes), pa.string()),
                "parent_codes": pa.array([[] for _ in codes], pa.list_(pa.string())),
            }
        ),
        meta / "codes.parquet",
    )
    (meta / "dataset.json").write_text(json.dumps({"dataset_name": "fixture", "meds_version": "0.4"}))
    return root


def synthetic_events(n_subjects: int = 60, seed: int = 0, first_id: int = 1000) -> tuple[list[dict], dict[int, str]]:
    """A small varied cohort: admissions, labs with values, ICD codes at discharge, ICU stays, deaths."""
    rng = np.random.default_rng(seed)
    labs = [("LAB//50912//mg/dL", 1.0, 0.4), ("LAB//51301//K/uL", 8.0, 3.0), ("LAB//50971//mEq/L", 4.2, 0.5)]
    dx = ["ICD10CM//I509", "ICD10CM//E119", "ICD10CM//N179", "ICD9CM//4280", "ICD9CM//25000", "ICD10CM//I10"]
    px = ["ICD10PCS//0DTJ4ZZ", "ICD10PCS//5A1955Z", "ICD9PCS//3893"]
    meds_ = ["MEDICATION//Furosemide", "MEDICATION//Heparin", "MEDICATION//Insulin"]
    races = ["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN - CHINESE", "UNKNOWN"]
    events: list[dict] = []
    splits: dict[int, str] = {}
    hadm = 20_000_000
    for i in range(n_subjects):
        sid = first_id + i
        splits[sid] = "train" if i % 5 < 3 else ("tuning" if i % 5 == 3 else "held_out")
        birth = pd.Timestamp(2100 + int(rng.integers(0, 60)), 1, 1)
        events.append(ev(sid, None, "GENDER//" + ("F" if rng.random() < 0.5 else "M")))
        events.append(ev(sid, birth, "MEDS_BIRTH"))
        t = birth + pd.Timedelta(days=int(rng.integers(20 * 365, 80 * 365)))
        race = races[int(rng.integers(0, len(races)))]
        dead = False
        for _ in range(int(rng.integers(1, 4))):
            hadm += 1
            admit = t + pd.Timedelta(minutes=int(rng.integers(60, 400 * 24 * 60)))
            los = pd.Timedelta(minutes=int(rng.integers(6 * 60, 15 * 24 * 60)))
            disch = admit + los
            for code in ("ADMISSION//EW EMER.", "ADMISSION_LOCATION//EMERGENCY ROOM", "INSURANCE//Medicare",
                         "MARITAL_STATUS//" + ("MARRIED" if rng.random() < 0.5 else "SINGLE"), "RACE//" + race):
                events.append(ev(sid, admit, code, hadm_id=hadm))
            events.append(ev(sid, admit, "TRANSFER//Emergency Department", hadm_id=hadm))
            if rng.random() < 0.4:
                icu_in = admit + pd.Timedelta(hours=float(rng.choice([0.0, 5.0, 30.0])))
                if icu_in < disch:
                    events.append(ev(sid, icu_in, "ICU_ADMISSION//Medical Intensive Care Unit (MICU)", hadm_id=hadm))
                    events.append(ev(sid, min(disch, icu_in + pd.Timedelta(hours=40)), "ICU_DISCHARGE//Medical Intensive Care Unit (MICU)", hadm_id=hadm))
            n_lab = int(rng.integers(3, 25))
            offs = np.sort(rng.integers(0, int(los.total_seconds()), n_lab))
            for o in offs:
                code, mu, sd = labs[int(rng.integers(0, len(labs)))]
                events.append(ev(sid, admit + pd.Timedelta(seconds=int(o)), code, float(rng.normal(mu, sd)), hadm_id=hadm))
            events.append(ev(sid, admit + pd.Timedelta(hours=2), meds_[int(rng.integers(0, 3))], hadm_id=hadm))
            events.append(ev(sid, disch.normalize() - pd.Timedelta(seconds=1) if disch.normalize() > admit else disch,
                             px[int(rng.integers(0, 3))], hadm_id=hadm))
            died = rng.random() < 0.12
            events.append(ev(sid, disch, "DISCHARGE//" + ("DIED" if died else "HOME"), hadm_id=hadm))
            for d in rng.choice(dx, size=int(rng.integers(1, 4)), replace=False):
                events.append(ev(sid, disch, str(d), hadm_id=hadm))
            if died:
                events.append(ev(sid, disch, "MEDS_DEATH", hadm_id=hadm))
                dead = True
                break
            t = disch
        if not dead and rng.random() < 0.3:
            events.append(ev(sid, t + pd.Timedelta(days=int(rng.integers(1, 900))), "OMR//Weight (Lbs)", float(rng.normal(170, 30))))
    return events, splits


def write_labels(path: Path, sids, times_us, labels) -> Path:
    """A label file in exactly the MEDS label schema (no split, no hadm_id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"subject_id": pa.array(np.asarray(sids, np.int64)),
                             "prediction_time": pa.array(np.asarray(times_us, np.int64).astype("datetime64[us]")),
                             "boolean_value": pa.array(np.asarray(labels, bool))}), path)
    return path
