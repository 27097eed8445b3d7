"""Read the trained cells' metrics.json files into one table: one row per cell.

Only the keys the fits need are required; a missing or non-numeric one is an
:class:`EhrscaleError` naming the file and the key. A cell whose loss is not a
finite positive number (a diverged run) is dropped with a warning, not fitted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import read_json

NUMERIC_REQUIRED = ("budget", "n_params", "n_params_nonembedding", "tokens", "flops", "flops_per_token")
OPTIONAL = (
    "train_loss", "epochs", "unique_tokens", "data_fraction", "wall_seconds", "tokens_per_second", "device", "dtype", "mfu",
    "config_hash", "seed", "context_length", "batch_size", "learning_rate", "schedule", "branch_tokens",
    "job_wall_seconds",
)
PARAM_COLUMNS = {"total": "n_params", "nonembedding": "n_params_nonembedding"}


def find_metrics(runs_dir: str | Path) -> list[Path]:
    """Every ``<runs_dir>/<cell>/metrics.json``, sorted (so the fit does not depend on listing order)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise EhrscaleError(f"runs directory not found: {runs_dir}")
    return sorted(runs_dir.glob("*/metrics.json"))


def _number(raw: dict, key: str, path: Path) -> float:
    if key not in raw:
        raise EhrscaleError(f"{path}: missing key '{key}'")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) and value is not None:
        raise EhrscaleError(f"{path}: key '{key}' must be a number, got {value!r}")
    return math.nan if value is None else float(value)


def read_metrics(path: Path, metrics: list[str]) -> dict:
    raw = read_json(path, "metrics file")
    if not isinstance(raw, dict):
        raise EhrscaleError(f"{path}: expected a JSON object")
    row: dict = {}
    for key in ("cell", "size"):
        if key not in raw:
            raise EhrscaleError(f"{path}: missing key '{key}'")
        row[key] = str(raw[key])
    for key in (*NUMERIC_REQUIRED, *metrics):
        row[key] = _number(raw, key, path)
    for key in NUMERIC_REQUIRED:
        if not (row[key] > 0 and math.isfinite(row[key])):
            raise EhrscaleError(f"{path}: key '{key}' must be a finite positive number, got {raw[key]!r}")
    for key in OPTIONAL:
        if key in raw and key not in row:
            row[key] = raw[key]
    row["log_path"] = str(Path(path).parent / "log.csv")
    return row


def load_points(paths: list[str | Path], metric: str | list[str] = "val_loss", param_count: str = "total",
                seeds_of_a_cell: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Return (points, warnings). ``seeds_of_a_cell``: seed replicates, where a cell may come once per seed.

    ``metric`` is the loss key, or a list whose first entry is the loss key and the rest other
    metrics to carry (frontier metrics). ``points`` gets ``n`` (the parameter count fitted) and
    ``loss`` (the loss metric's value).
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    metric = metrics[0]
    if param_count not in PARAM_COLUMNS:
        raise EhrscaleError(f"fit.param_count must be one of {sorted(PARAM_COLUMNS)}, got {param_count!r}")
    if not paths:
        raise EhrscaleError("no cells to fit: no metrics.json files were given or found")
    rows = [read_metrics(Path(p), metrics) for p in paths]
    df = pd.DataFrame(rows)
    key = ["cell", "seed"] if seeds_of_a_cell and "seed" in df else ["cell"]
    dup = df["cell"][df.duplicated(key)].tolist()
    if dup:
        raise EhrscaleError(f"duplicate cell name(s) across metrics files{' with one seed' if len(key) > 1 else ''}: "
                            f"{', '.join(sorted(set(dup)))}")
    warnings: list[str] = []
    bad = ~(np.isfinite(df[metric].to_numpy(float)) & (df[metric].to_numpy(float) > 0))
    if bad.any():
        names = ", ".join(df.loc[bad, "cell"])
        warnings.append(f"{int(bad.sum())} cell(s) with a non-finite or non-positive {metric} were excluded (diverged?): {names}")
        df = df.loc[~bad]
    if df.empty:
        raise EhrscaleError(f"no cells with a finite {metric} to fit")
    # Nominal budgets that differ only by float noise are one budget.
    df["budget"] = [float(f"{b:.6g}") for b in df["budget"]]
    df["n"] = df[PARAM_COLUMNS[param_count]].astype(float)
    df["loss"] = df[metric].astype(float)
    df = df.sort_values(["budget", "n", "cell"], kind="stable").reset_index(drop=True)
    return df, warnings


def training_record(points: pd.DataFrame) -> dict:
    """How the cells were trained, from their metrics: schedule, per-size LR and batch, and the
    tokens actually trained (WSD shares each size's stable phase) against training each cell alone."""
    schedules = sorted(set(points["schedule"].dropna())) if "schedule" in points else []
    independent = float(points["tokens"].sum())
    trained = 0.0
    for _, cells in points.groupby("size"):
        branches = pd.to_numeric(cells.get("branch_tokens"), errors="coerce") if "branch_tokens" in cells else None
        if branches is not None and branches.notna().all() and (cells.get("schedule") == "wsd").all():
            trained += float(branches.max() + (cells["tokens"] - branches).sum())
        else:
            trained += float(cells["tokens"].sum())
    sizes = {}
    for size, cells in points.groupby("size"):
        first = cells.iloc[0]
        sizes[str(size)] = {k: (None if pd.isna(first.get(k)) else float(first.get(k)))
                            for k in ("learning_rate", "batch_size") if k in cells}
    return {"schedules": schedules, "tokens_independent": independent, "tokens_trained": trained,
            "saved_fraction": 1.0 - trained / independent if independent else None, "sizes": sizes}


def fresh_cells(points: pd.DataFrame) -> pd.DataFrame:
    """The cells trained on the whole train split (data fraction 1): the plain laws' and IsoFLOPs' cells.
    Cells on a unique-data subset repeat their data; only the data-constrained law reads them."""
    if "data_fraction" not in points:
        return points
    return points[pd.to_numeric(points["data_fraction"], errors="coerce").fillna(1.0) >= 1.0].reset_index(drop=True)


def resampling_strata(points: pd.DataFrame) -> np.ndarray:
    """The strata a bootstrap resamples cells within: the budgets when every budget holds several cells
    (an IsoFLOPs design keeps each budget's share), else one stratum (any cells, e.g. runs of a published
    sweep with their exact compute, are resampled as a whole)."""
    counts = points.groupby("budget")["cell"].transform("size").to_numpy()
    return points["budget"].to_numpy(float) if (counts >= 2).all() else np.zeros(len(points))
