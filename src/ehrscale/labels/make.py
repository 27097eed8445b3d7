"""``ehrscale labels``: clinical task labels from a MEDS dataset, one declarative YAML file per task.

``ehrscale labels MEDS_DIR --task config/tasks/long_los.yaml --out LABELS/long_los.parquet``
(one task, one output: the Snakemake form) or
``ehrscale labels MEDS_DIR LABELS_DIR --tasks config/tasks/*.yaml`` (writes ``LABELS_DIR/<name>.parquet``).

Task files: :mod:`.tasks`; the label files: :mod:`.schema`; ehrscale's own tasks are computed by
:mod:`.compute`, ACES configs by ACES itself (:mod:`.aces`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.files import check_writable
from ehrscale.extract.splits import SPLITS
from ehrscale.labels.compute import admissions_table, compute_labels, read_events
from ehrscale.labels.schema import examples_path, write_labels
from ehrscale.labels.tasks import AcesTask, TaskSpec, load_task

log = logging.getLogger(__name__)


def make_labels(meds_dir: str | Path, specs: list, outputs: list[Path], predicates: str | Path | None = None
                ) -> dict[str, dict]:
    """Compute and write each task (a TaskSpec, or an AcesTask: ehrscale.labels.aces); returns per-task
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
            from ehrscale.labels.aces import aces_labels  # here: ACES is imported only for ACES tasks

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
