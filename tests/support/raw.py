"""Tiny raw MIMIC-IV directories written row by row, for tests that need known raw values."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

from ehrscale.extract.mimic import TABLES
from ehrscale.synth.writer import LAYOUT

# The tables extraction requires by default; each file gets exactly the columns ehrscale reads.
REQUIRED = ("patients", "admissions", "transfers", "icustays", "diagnoses_icd", "procedures_icd", "labevents",
            "prescriptions")


def write_raw(root: Path, rows: dict[str, list[dict]], gz: bool = True) -> Path:
    """Write ``rows[table]`` (dicts by column; missing columns empty) for every required table."""
    root = Path(root)
    for name in sorted(set(REQUIRED) | set(rows)):
        table = TABLES[name]
        path = root / table.module / (f"{name}.csv.gz" if gz else f"{name}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        opener = gzip.open if gz else open
        with opener(path, "wt", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table.columns), lineterminator="\n")
            writer.writeheader()
            for row in rows.get(name, []):
                writer.writerow({c: row.get(c, "") for c in table.columns})
    return root


def synth_path(root: Path, table: str) -> Path:
    """Where the synthetic generator writes ``table`` under ``root``."""
    return root / LAYOUT[table][0] / f"{table}.csv.gz"


def gz_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return f.read().splitlines()
