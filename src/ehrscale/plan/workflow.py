"""The workflow's DAG logic, torch-free and testable without Snakemake.

``workflow/rules/common.smk`` builds one :class:`Dag` from the validated config; the rules ask it for
their inputs, params, resources and the training command. What is Snakemake's (checkpoints,
``ancient``, wildcards) stays in the rule files; everything that can be computed from the config and
the planned grid is here, so it is unit-tested (``tests/plan/test_workflow.py``).

Two rules keep results from being retrained needlessly:

* **Params are the settings a job's results depend on, and only those.** A section reaches a job as
  sorted JSON (:meth:`Dag.settings`) without the keys that only change speed (threads, memory), and
  each training job gets only its own size and cell, so editing the grid never reruns trained cells.
* **The training command's text is fixed.** Snakemake reruns a job whose rule's command text changed
  since it ran; :func:`train_shell` writes the one command that ``train``, ``train_replicate`` and
  ``tune_run`` share, in exactly the text earlier runs recorded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

from ehrscale.core.errors import EhrscaleError
from ehrscale.core.settings import load_settings
from ehrscale.plan.grid import (
    Cell,
    GridSettings,
    job_resources,
    parse_cell_id,
    parse_chain,
    plan_from_config,
    single_cell_grid,
    size_definition,
    smallest_cells,
    stable_chains,
    sweep_multipliers,
)
from ehrscale.plan.rules import STABLE_INDEPENDENT, TrainSettings, branch_point, learning_rate_for
from ehrscale.probe.settings import ProbeSettings
from ehrscale.tokens.store import read_stats

# Flags of `ehrscale train` / `ehrscale stable` for a job's optional inputs, by input name.
OPTIONAL_INPUT_FLAGS = {"lr": "--lr-file", "branch": "--branch", "start": "--start", "adopt": "--adopt"}


def train_shell(cell: str, before: str = "{params.optional} ", after: str = "") -> str:
    """The command of every job that trains a whole cell. ``cell``: where the cell id comes from
    (``{wildcards.cell}``, or ``{params.cell}`` for an LR-sweep run); ``before`` / ``after``: the
    optional flags around the sections. ``trap '' TERM USR1``: the shell ignores a scheduler's
    preemption signal, so it outlives the trainer, which checkpoints and exits 75 (resume on rerun)."""
    return ("trap '' TERM USR1; ehrscale train --tokens {input.tokens} --out $(dirname {output.metrics}) "
            f"--cell {cell} {before}--sizes {{params.sizes:q}} --grid {{params.grid:q}} --model {{params.model:q}} "
            f"--settings {{params.train:q}} {after}--threads {{threads}} > {{log}} 2>&1")


def optional_args(input, names=tuple(OPTIONAL_INPUT_FLAGS)) -> str:
    """The flags of the optional inputs a job has (``input``: Snakemake's named input)."""
    return " ".join(f"{OPTIONAL_INPUT_FLAGS[n]} {getattr(input, n)}" for n in names if hasattr(input, n))


def multiplier_name(m: float) -> str:
    return f"x{m:g}"


@dataclasses.dataclass(frozen=True)
class Planned:
    """The kept cells by id and the vocabulary size, once the tokens exist."""

    cells: dict[str, Cell]
    vocab_size: int

    def of_size(self, name: str) -> Cell:
        """Any cell of a size or of a chain (a size on its unique data): they share the size's definition."""
        return next(c for c in self.cells.values() if name in (c.chain, c.size))


class Dag:
    """What the rules need from the config and the grid. ``results``: the run's output directory."""

    def __init__(self, config: dict, results: str) -> None:
        self.config = config
        self.results = results
        self.train = load_settings(TrainSettings, config["train"], "train")
        self.wsd = self.train.schedule == "wsd"
        self.tune_multipliers = sweep_multipliers(config.get("tune"), self.train)
        self.replicates = config["fit"].get("replicates") or {}
        self.tasks = list(config["labels"]["tasks"])

    def settings(self, section: str, exclude=()) -> str:
        """A config section as sorted JSON for a stage's ``--settings``: a param, so editing it reruns
        the stage. ``exclude``: keys that only tune speed (threads, memory), which rules pass from
        ``threads`` and ``resources`` instead, so changing them reruns nothing."""
        return json.dumps({k: v for k, v in self.config.get(section, {}).items() if k not in exclude}, sort_keys=True)

    # ---- data

    def raw_dir(self) -> str:
        """The raw MIMIC-IV tables: the synthetic cohort's, or ``dataset.raw_dir``."""
        dataset = self.config["dataset"]
        return f"{self.results}/raw" if dataset["source"] == "synthetic" else dataset["raw_dir"]

    def aces_predicates(self) -> list[str]:
        """The ACES predicates file that fills ACES tasks' dataset-specific predicates (or none)."""
        path = self.config["labels"].get("aces_predicates")
        return [path] if path else []

    # ---- the grid

    def planned(self, tokens_dir: str | Path) -> Planned:
        """The grid, planned once per version of the tokens (not once per job)."""
        return _plan(self, str(tokens_dir), Path(tokens_dir, "stats.json").stat().st_mtime_ns)

    @property
    def tokens_dir(self) -> str:
        return f"{self.results}/tokens"

    def final_targets(self) -> list[str]:
        labels = [f"{self.results}/labels/{sub}{task}.parquet" for task in self.tasks for sub in ("", "examples/")]
        return [f"{self.results}/summary.md", *labels]

    # ---- training: paths, inputs, params

    @property
    def lr_rule_path(self) -> str:
        """The tune step's record: the LR rule fitted to the whole sweep and every size's peak LR."""
        return f"{self.results}/tune/lr_rule.json"

    @property
    def lr_rule_section(self) -> str:
        return f"{self.results}/tune/lr_rule.md"

    def tuned_lr(self) -> dict[str, str]:
        """The tune step's record as a named input (every size's LR is in it), or nothing (the width rule,
        or a pinned LR)."""
        return {"lr": self.lr_rule_path} if self.tune_multipliers else {}

    def stable_path(self, chain: str, branch: int) -> str:
        return f"{self.results}/stable/{chain}/T{branch}.pt"

    def sweep_runs(self, size: str) -> list[str]:
        """A size's LR-sweep runs (their metrics.json). Each trains the size's smallest cell whole and,
        under WSD, leaves the state of its first stable segment: the winner's are copied, not retrained."""
        return [f"{self.results}/tune/{size}/{multiplier_name(m)}/metrics.json" for m in self.tune_multipliers]

    def all_sweep_runs(self, grid: Planned) -> list[str]:
        """Every size's sweep runs: the tune step fits one rule to all of them."""
        return [path for size in sorted({cell.size for cell in grid.cells.values()}) for path in self.sweep_runs(size)]

    def tune_cell(self, grid: Planned, size: str) -> Cell:
        """The cell a size's LR sweep trains: its smallest in the grid."""
        return smallest_cells(list(grid.cells.values()))[size]

    def tune_settings(self, grid: Planned, size: str, multiplier: float) -> str:
        lr = float(multiplier) * learning_rate_for(self.tune_cell(grid, size).d_model, self.train)
        return json.dumps(json.loads(self.settings("train", exclude=("threads",))) | {"learning_rate": lr}, sort_keys=True)

    @staticmethod
    def size_of(cell: str) -> str:
        return parse_cell_id(cell)[0]

    def size_json(self, grid: Planned, name: str) -> str:
        """Only this size's definition (``name`` a size or a chain on a data subset), keyed by the size (from the
        plan: generated sizes have no config entry), so editing other sizes never reruns it."""
        return json.dumps({parse_chain(name)[0]: size_definition(grid.of_size(name))}, sort_keys=True)

    @staticmethod
    def cell_grid(cell: str) -> str:
        """A job's grid section: its own cell only (:func:`ehrscale.plan.grid.single_cell_grid`)."""
        return json.dumps(single_cell_grid(cell, GridSettings()), sort_keys=True)

    def stable_settings(self) -> str:
        """A stable segment's train section: without the settings only cooldowns use, so editing them retrains no chain."""
        return self.settings("train", exclude=("threads", *STABLE_INDEPENDENT))

    def segment(self, grid: Planned, chain: str, branch: int) -> tuple[int | None, int]:
        """(previous branch point or None, this one) of a stable chain (a size on its unique data)."""
        points = stable_chains(list(grid.cells.values()), self.train)[chain]
        i = points.index(int(branch))
        return (points[i - 1] if i else None), points[i]

    def stable_inputs(self, grid: Planned, chain: str, branch: int) -> dict:
        """A segment starts from its chain's previous branch state (``start``; the rule marks it
        ancient: a segment rerun from an inserted branch point reproduces the same state, docs/wsd.md),
        or a first segment may copy its state from the size's LR sweep (``adopt``)."""
        size = parse_chain(chain)[0]
        prev, _ = self.segment(grid, chain, branch)
        if prev is not None:
            start = {"start": self.stable_path(chain, prev)}
        else:
            start = {"adopt": self.sweep_runs(size)} if self.tune_multipliers else {}
        return {"tokens": self.tokens_dir, **self.tuned_lr(), **start}

    def train_inputs(self, grid: Planned, cell: str) -> dict:
        """A cell needs the tokens, its size's tuned LR and, under WSD, its branch state (``branch``,
        marked ancient by the rule); the smallest cell of a swept size may copy its sweep run."""
        size = self.size_of(cell)
        inputs = {"tokens": self.tokens_dir, **self.tuned_lr()}
        if self.wsd:
            inputs["branch"] = self.stable_path(grid.cells[cell].chain, branch_point(grid.cells[cell].tokens, self.train))
        if self.tune_multipliers and self.tune_cell(grid, size).id == cell:
            inputs["adopt"] = self.sweep_runs(size)
        return inputs

    def replicate_train_settings(self, seed: int) -> str:
        return json.dumps({k: v for k, v in self.config["train"].items() if k != "threads"} | {"seed": int(seed)},
                          sort_keys=True)

    # ---- scheduler estimates

    def cell_resources(self, grid: Planned, cell: str) -> dict[str, int]:
        return job_resources(grid.cells[cell], self.config["model"]["context_length"], grid.vocab_size,
                             self.config["cluster"], self.train)

    def segment_resources(self, grid: Planned, chain: str, branch: int) -> dict[str, int]:
        """A segment's estimates: its chain's cell with the segment's tokens."""
        start, end = self.segment(grid, chain, branch)
        cell = dataclasses.replace(grid.of_size(chain), tokens=end - (start or 0))
        return job_resources(cell, self.config["model"]["context_length"], grid.vocab_size, self.config["cluster"],
                             self.train)

    # ---- seed replicates, probes

    def replicate_cells(self, grid: Planned) -> list[str]:
        """The cells fit.replicates retrains: those it names, and the middle size (by N; the lower of two)
        of each budget it names ("first" and "last" are the grid's smallest and largest), on the whole data."""
        named = list(self.replicates.get("cells") or [])
        unknown = sorted(set(named) - set(grid.cells))
        if unknown:
            raise EhrscaleError(f"fit.replicates.cells: {unknown} are not cells of the grid; kept cells: {sorted(grid.cells)}")
        fresh = [c for c in grid.cells.values() if c.data_fraction == 1.0]
        budgets = sorted({c.budget for c in fresh})
        for want in self.replicates.get("budgets") or []:
            budget = {"first": budgets[0], "last": budgets[-1]}.get(want, want) if budgets else None
            ladder = sorted((c for c in fresh if budget is not None and math.isclose(c.budget, float(budget), rel_tol=1e-9)),
                            key=lambda c: c.n_params)
            if not ladder:
                raise EhrscaleError(f"fit.replicates.budgets: {want!r} is not a budget of the grid; budgets: {budgets}")
            named.append(ladder[(len(ladder) - 1) // 2].id)
        return list(dict.fromkeys(named))

    def replicate_metrics(self, grid: Planned) -> list[str]:
        """Seed replicates (fit.replicates): each of :meth:`replicate_cells` retrained with each other seed."""
        train_seed = self.config["train"].get("seed", 0)
        return [f"{self.results}/replicates/{cell}/seed{seed}/metrics.json"
                for cell in self.replicate_cells(grid) for seed in self.replicates.get("seeds", []) if seed != train_seed]

    def run_files(self, grid: Planned, name: str) -> list[str]:
        """Every cell's ``runs/<cell>/<name>`` (metrics.json, log.csv)."""
        return [f"{self.results}/runs/{cell}/{name}" for cell in grid.cells]

    def probe_records(self, grid: Planned) -> list[str]:
        return [f"{self.results}/probes/{cell}/metrics.json" for cell in grid.cells]

    def task_labels(self) -> list[str]:
        return [f"{self.results}/labels/{task}.parquet" for task in self.tasks]

    def baselines(self) -> list[str]:
        return [f"{self.results}/baseline/{task}.json" for task in self.tasks]

    def utility_settings(self) -> str:
        """What the utility laws read of the fit section: the interval level, the seed and the loss column."""
        keep = ("ci_level", "seed", "param_count", "loss_metric")
        return json.dumps({k: v for k, v in self.config["fit"].items() if k in keep}, sort_keys=True)

    def summary_sections(self) -> list[str]:
        """summary.md's sections in order: the loss laws', the LR rule's when the sweep is on, then the utility
        laws' when there are tasks."""
        return ([f"{self.results}/fits/scaling.md"] + ([self.lr_rule_section] if self.tune_multipliers else [])
                + ([f"{self.results}/fits/utility.md"] if self.tasks else []))

    def embed_settings(self) -> str:
        """Only what changes the embeddings: the device, the example caps (which examples) and how much history."""
        keep = ("device", "max_train_examples", "max_tuning_examples", "history")
        return json.dumps({k: v for k, v in self.config.get("probe", {}).items() if k in keep}, sort_keys=True)

    def embed_batch_tokens(self) -> int:
        """Padded tokens per embedding batch: speed only, so a plain param, not in the settings."""
        return load_settings(ProbeSettings, self.config.get("probe"), "probe").batch_tokens


@functools.lru_cache
def _plan(dag: Dag, tokens_dir: str, stats_mtime: int) -> Planned:
    kept = plan_from_config(dag.config, tokens_dir)[0]
    return Planned({cell.id: cell for cell in kept}, int(read_stats(tokens_dir)["vocab_size"]))
