"""``ehrscale probe``: a logistic-regression probe of one cell's cached embeddings, per task.

Features are standardized on train. The L2 strength ``C`` is chosen from ``probe.c_values``
(a log grid) by AUROC on tuning, the model with that ``C`` (fitted on train) scores held_out,
and held_out gets AUROC, AUPRC, Brier, n and prevalence with stratified bootstrap intervals
(:mod:`ehrscale.probe.metrics`). A task with fewer than ``min_positives`` positives or negatives
in any split is recorded as skipped, with the reason, never scored.

Writes ``metrics.json`` (one record per task) and, per task, held-out predictions in the MEDS
evaluation layout: subject_id, prediction_time, boolean_value, predicted_boolean_probability,
predicted_boolean_value (probability >= 0.5).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_path, write_json
from ehrscale.core.settings import load_settings
from ehrscale.probe.examples import load_embeddings
from ehrscale.probe.metrics import binary_metrics
from ehrscale.probe.settings import ProbeSettings

log = logging.getLogger(__name__)

PREDICTION_SCHEMA = pa.schema([
    ("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")), ("boolean_value", pa.bool_()),
    ("predicted_boolean_probability", pa.float64()), ("predicted_boolean_value", pa.bool_()),
])


def too_few(y_by_split: dict[str, np.ndarray], min_positives: int) -> str | None:
    """The reason a task cannot be probed, or None."""
    for split, y in y_by_split.items():
        pos, neg = int(np.sum(y)), int(len(y) - np.sum(y))
        if min(pos, neg) < min_positives:
            return (f"too few examples in {split}: {pos} positive, {neg} negative "
                    f"(probe.min_positives = {min_positives} of each)")
    return None


def fit_probe(X: dict, y: dict, settings: ProbeSettings) -> tuple[dict, np.ndarray | None]:
    """Fit on X['train'], choose C on X['tuning'], score X['held_out']; returns (record, held-out probabilities)."""
    reason = too_few(y, settings.min_positives)
    base = {split: {"n": int(len(y[split])), "positives": int(np.sum(y[split]))} for split in y}
    if reason:
        return {"status": "skipped", "reason": reason, "counts": base}, None
    scaler = StandardScaler(with_mean=not hasattr(X["train"], "tocsr"))
    xtr, xtu, xte = scaler.fit_transform(X["train"]), scaler.transform(X["tuning"]), scaler.transform(X["held_out"])
    tuning, best = [], None
    for c in sorted(float(v) for v in settings.c_values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=settings.max_iter).fit(xtr, y["train"])
        auc = float(roc_auc_score(y["tuning"], model.predict_proba(xtu)[:, 1]))
        tuning.append({"C": c, "auroc": auc})
        if best is None or auc > best[0]:
            best = (auc, c, model)
    p = best[2].predict_proba(xte)[:, 1]
    record = {"status": "ok", "C": best[1], "tuning_auroc": best[0], "tuning_grid": tuning, "counts": base,
              "held_out": binary_metrics(y["held_out"], p, settings.bootstrap, settings.seed, settings.ci_level)}
    return record, p


def write_predictions(path, examples: pd.DataFrame, p: np.ndarray | None) -> None:
    """Held-out predictions in the MEDS evaluation layout (no rows for a skipped task)."""
    if p is None:
        table = PREDICTION_SCHEMA.empty_table()
    else:
        table = pa.table({
            "subject_id": examples["subject_id"].to_numpy(np.int64),
            "prediction_time": examples["prediction_time"].to_numpy(np.int64).astype("datetime64[us]"),
            "boolean_value": examples["label"].to_numpy(bool),
            "predicted_boolean_probability": p.astype(np.float64),
            "predicted_boolean_value": p >= 0.5,
        }, schema=PREDICTION_SCHEMA)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def probe_embeddings(embeddings, out_dir, settings: ProbeSettings) -> dict:
    """Probe every task of one cell's embeddings file; writes metrics.json and <task>.predictions.parquet."""
    x, tasks, meta = load_embeddings(embeddings)
    out_dir = Path(out_dir)
    records = {}
    for task, df in tasks.items():
        parts = {s: df[df["split"] == s] for s in ("train", "tuning", "held_out")}
        X = {s: x[d["row"].to_numpy()] for s, d in parts.items()}
        y = {s: d["label"].to_numpy(bool) for s, d in parts.items()}
        rec, p = fit_probe(X, y, settings)
        records[task] = rec
        write_predictions(out_dir / f"{task}.predictions.parquet", parts["held_out"], p)
        if rec["status"] == "ok":
            a = rec["held_out"]["auroc"]
            log.info("%s: AUROC %.3f [%.3f, %.3f] (C=%g)", task, a["estimate"], a.get("lo", np.nan), a.get("hi", np.nan), rec["C"])
        else:
            log.warning("%s: skipped: %s", task, rec["reason"])
    result = {"cell": meta.get("cell"), "kind": "linear_probe", "embedding": meta, "tasks": records}
    write_json(out_dir / "metrics.json", result)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", required=True, help="a cell's embeddings .npz (ehrscale embed)")
    parser.add_argument("--out", required=True, help="directory for metrics.json and <task>.predictions.parquet")
    parser.add_argument("--settings", help="probe settings as JSON or @file.json")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ProbeSettings, args.settings, "probe")
    if not Path(args.embeddings).exists():
        raise EhrscaleError(f"embeddings not found: {args.embeddings}")
    probe_embeddings(args.embeddings, args.out, settings)
    return 0
