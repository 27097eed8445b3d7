"""Helpers the tests share (plain code; the fixtures built on them are in tests/conftest.py)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DEMO = ROOT / "tests" / "data" / "mimic-iv-demo"  # the real MIMIC-IV demo's raw tables
DEMO_MEDS = ROOT / "tests" / "data" / "mimic-iv-demo-meds"  # the same patients through the official MEDS ETL
TASKS = ROOT / "config" / "tasks"
