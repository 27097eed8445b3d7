"""``ehrscale probe``: logistic-regression probes of one cell's cached embeddings, per task.

Features are standardized on train. The L2 strength ``C`` is chosen from ``probe.c_values`` (a log
grid) by AUROC on tuning, the model with that ``C`` (fitted on train) scores held_out, and held_out
gets AUROC, AUPRC, Brier, n and prevalence with patient-clustered bootstrap intervals
(:mod:`ehrscale.probe.metrics`). The decision threshold behind ``predicted_boolean_value`` is chosen
on tuning too (Youden's J: the largest sensitivity + specificity), never on held_out. A task with
fewer than ``min_positives`` positives or negatives in any split is recorded as skipped, with the
reason, never scored.

**What the model adds beyond counts.** With the count baseline's cache of the same examples
(``ehrscale baseline``: log counts of the whole history, :mod:`ehrscale.probe.baseline`), each task
also gets a probe on the embedding and the counts together, and its held-out AUROC minus that of
counts alone on the same examples, with a paired patient-clustered interval (``combined``).

Writes ``metrics.json`` (one record per task) and, per task, held-out predictions in the MEDS
evaluation layout: subject_id, prediction_time, boolean_value, predicted_boolean_probability,
predicted_boolean_value; the parquet metadata states the threshold and how it was chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.preprocessing import StandardScaler

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import atomic_path, write_json
from ehrscale.core.settings import load_settings
from ehrscale.probe.examples import load_embeddings, read_counts
from ehrscale.probe.metrics import binary_metrics, paired_auroc_difference
from ehrscale.probe.settings import ProbeSettings

log = logging.getLogger(__name__)

SPLITS3 = ("train", "tuning", "held_out")
KEYS = ["subject_id", "prediction_time"]
PREDICTION_SCHEMA = pa.schema([
    ("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")), ("boolean_value", pa.bool_()),
    ("predicted_boolean_probability", pa.float64()), ("predicted_boolean_value", pa.bool_()),
])
THRESHOLD_RULE = "Youden's J (sensitivity + specificity - 1) maximal on tuning"


@dataclasses.dataclass
class ProbeFit:
    """A fitted probe: its record for metrics.json and its held-out probabilities (None when skipped)."""

    record: dict
    held_out: np.ndarray | None = None
    threshold: float | None = None


def too_few(y_by_split: dict[str, np.ndarray], min_positives: int) -> str | None:
    """The reason a task cannot be probed, or None."""
    for split, y in y_by_split.items():
        pos, neg = int(np.sum(y)), int(len(y) - np.sum(y))
        if min(pos, neg) < min_positives:
            return (f"too few examples in {split}: {pos} positive, {neg} negative "
                    f"(probe.min_positives = {min_positives} of each)")
    return None


def tuning_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold with the largest Youden's J on (tuning) labels ``y``."""
    fpr, tpr, thresholds = roc_curve(y, p)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def fit_probe(X: dict, y: dict, settings: ProbeSettings, groups=None) -> ProbeFit:
    """Fit on X['train'], choose C and the threshold on X['tuning'], score X['held_out'] (intervals
    resample ``groups``, the held-out examples' patients)."""
    reason = too_few(y, settings.min_positives)
    base = {split: {"n": int(len(y[split])), "positives": int(np.sum(y[split]))} for split in y}
    if reason:
        return ProbeFit({"status": "skipped", "reason": reason, "counts": base})
    scaler = StandardScaler(with_mean=not sp.issparse(X["train"]))
    xtr, xtu, xte = scaler.fit_transform(X["train"]), scaler.transform(X["tuning"]), scaler.transform(X["held_out"])
    tuning, best = [], None
    for c in sorted(float(v) for v in settings.c_values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=settings.max_iter).fit(xtr, y["train"])
        p_tune = model.predict_proba(xtu)[:, 1]
        auc = float(roc_auc_score(y["tuning"], p_tune))
        tuning.append({"C": c, "auroc": auc})
        if best is None or auc > best[0]:
            best = (auc, c, model, p_tune)
    threshold = tuning_threshold(y["tuning"], best[3])
    p = best[2].predict_proba(xte)[:, 1]
    record = {"status": "ok", "C": best[1], "tuning_auroc": best[0], "tuning_grid": tuning, "counts": base,
              "threshold": {"value": threshold, "rule": THRESHOLD_RULE},
              "held_out": binary_metrics(y["held_out"], p, groups, settings.bootstrap, settings.seed, settings.ci_level)}
    return ProbeFit(record, p, threshold)


def write_predictions(path, examples: pd.DataFrame, fit: ProbeFit) -> None:
    """Held-out predictions in the MEDS evaluation layout (no rows for a skipped task); the schema's
    metadata states the threshold of ``predicted_boolean_value`` and its rule."""
    if fit.held_out is None:
        table = PREDICTION_SCHEMA.empty_table()
    else:
        p = fit.held_out
        table = pa.table({
            "subject_id": examples["subject_id"].to_numpy(np.int64),
            "prediction_time": examples["prediction_time"].to_numpy(np.int64).astype("datetime64[us]"),
            "boolean_value": examples["label"].to_numpy(bool),
            "predicted_boolean_probability": p.astype(np.float64),
            "predicted_boolean_value": p >= fit.threshold,
        }, schema=PREDICTION_SCHEMA)
        meta = {"threshold": fit.threshold, "threshold_rule": THRESHOLD_RULE}
        table = table.replace_schema_metadata({b"ehrscale": json.dumps(meta).encode()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_predictions(path) -> pd.DataFrame:
    """Held-out predictions (:func:`write_predictions`'s layout) as a DataFrame with int64 µs times."""
    try:
        df = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as err:
        raise EhrscaleError(f"cannot read predictions {path}: {err}") from err
    df["prediction_time"] = df["prediction_time"].to_numpy().astype("datetime64[us]").astype(np.int64)
    return df


def _split_parts(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {s: df[df["split"] == s] for s in SPLITS3}


def combined_probe(x: np.ndarray, parts: dict[str, pd.DataFrame], counts: tuple, counts_alone: pd.DataFrame,
                   settings: ProbeSettings) -> dict:
    """The probe on [embedding, counts] of the same examples, and its held-out AUROC gain over counts
    alone (``counts_alone``: the baseline's held-out predictions of these examples) with a paired interval."""
    keys, matrix = counts
    where = pd.Series(np.arange(len(keys)), index=pd.MultiIndex.from_frame(keys[KEYS]))
    X, y = {}, {}
    for s, d in parts.items():
        rows = where.reindex(pd.MultiIndex.from_frame(d[KEYS])).to_numpy()
        if np.isnan(rows.astype(float)).any():
            raise EhrscaleError(f"the count cache lacks {int(np.isnan(rows.astype(float)).sum())} {s} example(s) of the "
                                "embeddings: were both made with the same probe caps?")
        X[s] = sp.hstack([sp.csr_matrix(x[d["row"].to_numpy()]), matrix[rows.astype(np.int64)]], format="csr")
        y[s] = d["label"].to_numpy(bool)
    held = parts["held_out"]
    fit = fit_probe(X, y, settings, held["subject_id"].to_numpy())
    out = {k: v for k, v in fit.record.items() if k in ("status", "reason", "C", "tuning_auroc", "held_out")}
    if fit.held_out is None:
        return out
    alone = held[KEYS].merge(counts_alone, on=KEYS, how="left", validate="one_to_one")
    if alone["predicted_boolean_probability"].isna().any():
        raise EhrscaleError("the baseline's predictions lack held-out examples of the embeddings")
    gain = paired_auroc_difference(y["held_out"], alone["predicted_boolean_probability"].to_numpy(), fit.held_out,
                                   held["subject_id"].to_numpy(), settings.bootstrap, settings.seed, settings.ci_level)
    return out | {"gain_over_counts": gain | {"beyond_interval": bool(gain.get("lo", -1.0) > 0)}}


def probe_embeddings(embeddings, out_dir, settings: ProbeSettings, baseline_dir=None) -> dict:
    """Probe every task of one cell's embeddings file; writes metrics.json and <task>.predictions.parquet.
    ``baseline_dir``: the count baseline's directory (``<task>.counts.npz`` and
    ``<task>.same_examples.predictions.parquet``), for the combined probe."""
    x, tasks, meta = load_embeddings(embeddings)
    out_dir = Path(out_dir)
    records = {}
    for task, df in tasks.items():
        parts = _split_parts(df)
        X = {s: x[d["row"].to_numpy()] for s, d in parts.items()}
        y = {s: d["label"].to_numpy(bool) for s, d in parts.items()}
        fit = fit_probe(X, y, settings, parts["held_out"]["subject_id"].to_numpy())
        records[task] = fit.record
        write_predictions(out_dir / f"{task}.predictions.parquet", parts["held_out"], fit)
        if fit.held_out is not None and baseline_dir is not None:
            base = Path(baseline_dir)
            records[task]["combined"] = combined_probe(
                x, parts, read_counts(base / f"{task}.counts.npz"),
                read_predictions(base / f"{task}.same_examples.predictions.parquet"), settings)
        _log(task, records[task])
    result = {"cell": meta.get("cell"), "kind": "linear_probe", "embedding": meta, "tasks": records}
    write_json(out_dir / "metrics.json", result)
    return result


def _log(task: str, rec: dict) -> None:
    if rec["status"] != "ok":
        log.warning("%s: skipped: %s", task, rec["reason"])
        return
    a = rec["held_out"]["auroc"]
    line = f"{task}: AUROC {a['estimate']:.3f} [{a.get('lo', np.nan):.3f}, {a.get('hi', np.nan):.3f}] (C={rec['C']:g})"
    gain = (rec.get("combined") or {}).get("gain_over_counts")
    if gain:
        line += f"; with counts, {gain['estimate']:+.3f} [{gain.get('lo', np.nan):+.3f}, {gain.get('hi', np.nan):+.3f}] over counts"
    log.info(line)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", required=True, help="a cell's embeddings .npz (ehrscale embed)")
    parser.add_argument("--out", required=True, help="directory for metrics.json and <task>.predictions.parquet")
    parser.add_argument("--settings", help="probe settings as JSON or @file.json")
    parser.add_argument("--baseline", help="the count baseline's directory: adds the probe on embedding and counts")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ProbeSettings, args.settings, "probe")
    if not Path(args.embeddings).exists():
        raise EhrscaleError(f"embeddings not found: {args.embeddings}")
    probe_embeddings(args.embeddings, args.out, settings, args.baseline)
    return 0
