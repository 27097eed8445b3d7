"""Fixtures shared across the stages' tests. Plain helpers (data builders, known laws, the SLURM
cluster) live in the ``support`` package beside this file; stage-specific fixtures stay in their module."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehrscale.cli import main as cli_main
from support import DEMO, TASKS


@pytest.fixture(scope="session")
def demo_pipeline(tmp_path_factory) -> Path:
    """The real MIMIC-IV demo through the data stages' commands, once per session: ``meds/``,
    ``tok/`` and ``labels/`` (the four default tasks) under the returned root. Read-only."""
    root = tmp_path_factory.mktemp("demo_pipeline")
    assert cli_main(["extract", str(DEMO), str(root / "meds")]) == 0
    assert cli_main(["tokenize", str(root / "meds"), str(root / "tok")]) == 0
    assert cli_main(["labels", str(root / "meds"), str(root / "labels"), "--tasks", str(TASKS)]) == 0
    return root
