import functools
import json
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

sys.path.insert(0, str(Path(workflow.basedir, "src")))
from ehrscale.config import validate_config
from ehrscale.store import read_stats
from ehrscale.grid import (GridSettings, job_resources, parse_cell_id, plan_from_config, single_cell_grid,
                           size_definition, smallest_cells, stable_chains)
from ehrscale.io import load_settings
from ehrscale.train import STABLE_INDEPENDENT, TrainSettings, learning_rate_for

# Fails before any job runs, naming each bad key.
validate_config(config, Path(workflow.basedir, "workflow/schemas/config.schema.yaml"))

NAME = config["dataset"]["name"]
RESULTS = f"results/{NAME}"
SOURCE = config["dataset"]["source"]
# Rules call the library's CLI as `ehrscale`, a shell function defined here. Without
# --sdm conda it runs the Python that runs Snakemake (the project's venv, activated or
# not); with it, the env's python. src/ on PYTHONPATH serves conda envs, where the
# package itself is not installed.
_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_PYTHON = "python" if _CONDA else sys.executable
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={Path(workflow.basedir, 'src')}:${{{{PYTHONPATH:-}}}}; "
    f"ehrscale() {{{{ {_PYTHON} -m ehrscale \"$@\"; }}}}; "
)


def settings(section, exclude=()):
    """A config section as JSON for a stage's --settings. It is a param, so editing it reruns
    the stage; ``exclude`` keys that only tune speed (threads, memory), which rules pass from
    ``threads`` and ``resources`` instead, so changing them reruns nothing."""
    return json.dumps({k: v for k, v in config.get(section, {}).items() if k not in exclude}, sort_keys=True)


# DuckDB gets three quarters of a job's memory: it overshoots its limit a little.
DUCKDB_MEMORY = "$(( {resources.mem_mb} * 3 / 4 ))MB"


def raw_dir():
    if SOURCE == "synthetic":
        return f"{RESULTS}/raw"
    return config["dataset"]["raw_dir"]


def aces_predicates():
    """The ACES predicates file that fills ACES tasks' dataset-specific predicates (or none)."""
    path = config["labels"].get("aces_predicates")
    return [path] if path else []


def final_targets():
    labels = [f"{RESULTS}/labels/{sub}{task}.parquet" for task in config["labels"]["tasks"] for sub in ("", "examples/")]
    return [f"{RESULTS}/summary.md", *labels]


# ---- the IsoFLOPs grid (train.smk, fit.smk)


@functools.lru_cache
def _plan(tokens_dir, stats_mtime):
    """Kept cells by id and the vocab size, planned once per tokens version (not per job)."""
    kept = plan_from_config(config, tokens_dir)[0]
    return {cell.id: cell for cell in kept}, int(read_stats(tokens_dir)["vocab_size"])


def planned(tokens_dir):
    return _plan(str(tokens_dir), Path(tokens_dir, "stats.json").stat().st_mtime_ns)


def grid_cells():
    """The kept cells of the IsoFLOPs grid; known once the tokenize checkpoint has run."""
    return list(planned(checkpoints.tokenize.get().output[0])[0].values())


def trained_metrics(wildcards):
    return [f"{RESULTS}/runs/{cell.id}/metrics.json" for cell in grid_cells()]


def trained_logs(wildcards):
    return [f"{RESULTS}/runs/{cell.id}/log.csv" for cell in grid_cells()]


def cell_resources(cell, input):
    cells, vocab_size = planned(input.tokens)
    return job_resources(cells[cell], config["model"]["context_length"], vocab_size, config["cluster"])


def stable_resources(wildcards, input):
    """A segment's estimates: its size's cell with the segment's tokens."""
    import dataclasses

    cells, vocab_size = planned(input.tokens)
    start, end = segment(wildcards)
    cell = next(c for c in cells.values() if c.size == wildcards.size)
    segment_cell = dataclasses.replace(cell, tokens=end - (start or 0))
    return job_resources(segment_cell, config["model"]["context_length"], vocab_size, config["cluster"])


def size_json(size):
    """Only this size's definition (from the plan: generated sizes have no config entry),
    so editing other sizes never reruns it."""
    cell = next(c for c in grid_cells() if c.size == size)
    return json.dumps({size: size_definition(cell)}, sort_keys=True)


def cell_sizes(wildcards):
    return size_json(parse_cell_id(wildcards.cell)[0])


# ---- the schedule: cosine cells, or WSD stable chains + cooldowns; the per-size LR sweep (train.smk)

TRAIN = load_settings(TrainSettings, config["train"], "train")
WSD = TRAIN.schedule == "wsd"
TUNE_MULTIPLIERS = [] if TRAIN.learning_rate else [float(m) for m in (config.get("tune") or {}).get("lr_multipliers") or []]


def multiplier_name(m):
    return f"x{m:g}"


def tuned_lr(size):
    """The tune step's choice for a size, or nothing (the width rule, or a pinned LR)."""
    return {"lr": f"{RESULTS}/tune/{size}.json"} if TUNE_MULTIPLIERS else {}


def stable_path(size, branch):
    return f"{RESULTS}/stable/{size}/T{branch}.pt"


def segment(wildcards):
    """(previous branch point or None, this one) of a size's stable chain."""
    points = stable_chains(grid_cells(), TRAIN)[wildcards.size]
    i = points.index(int(wildcards.branch))
    return (points[i - 1] if i else None), points[i]


def stable_inputs(wildcards):
    """A stable segment starts from its chain's previous branch state. ancient(): a segment
    rerun from an inserted branch point reproduces the same state, so later segments and
    cooldowns are not retrained because its file is newer (docs/wsd.md). A first segment
    may copy its state from the size's LR sweep instead (``adopt``)."""
    prev, _ = segment(wildcards)
    if prev is not None:
        start = {"start": ancient(stable_path(wildcards.size, prev))}
    else:
        start = {"adopt": sweep_runs(wildcards.size)} if TUNE_MULTIPLIERS else {}
    return {"tokens": f"{RESULTS}/tokens", **tuned_lr(wildcards.size), **start}


def train_inputs(wildcards):
    """A cell needs the tokens, its size's tuned LR and, under WSD, its branch state."""
    from ehrscale.train import branch_point

    size = parse_cell_id(wildcards.cell)[0]
    inputs = {"tokens": f"{RESULTS}/tokens", **tuned_lr(size)}
    if WSD:
        cell = planned(checkpoints.tokenize.get().output[0])[0][wildcards.cell]
        inputs["branch"] = ancient(stable_path(size, branch_point(cell.tokens, TRAIN)))
    if TUNE_MULTIPLIERS and tune_cell(size).id == wildcards.cell:
        inputs["adopt"] = sweep_runs(size)
    return inputs


def optional_args(input, names=("lr", "branch", "start", "adopt")):
    flags = {"lr": "--lr-file", "branch": "--branch", "start": "--start", "adopt": "--adopt"}
    return " ".join(f"{flags[n]} {getattr(input, n)}" for n in names if hasattr(input, n))


def tune_cell(size):
    """The cell a size's LR sweep trains: its smallest in the grid."""
    return smallest_cells(grid_cells())[size]


def tune_settings(wildcards):
    lr = float(wildcards.mult) * learning_rate_for(tune_cell(wildcards.size).d_model, TRAIN)
    return json.dumps(json.loads(settings("train", exclude=("threads",))) | {"learning_rate": lr}, sort_keys=True)


def sweep_runs(size):
    """A size's LR-sweep runs (their metrics.json). Each trains the size's smallest cell whole
    and, under WSD, leaves the state of its first stable segment: the winner's are copied, not retrained."""
    return [f"{RESULTS}/tune/{size}/{multiplier_name(m)}/metrics.json" for m in TUNE_MULTIPLIERS]


def tune_runs(wildcards):
    return sweep_runs(wildcards.size)


# ---- opt-in seed replicates (fit.smk)

REPLICATES = config["fit"].get("replicates") or {}


wildcard_constraints:
    seed=r"\d+",
    cell=r"C[0-9p]+e-?[0-9]+_[A-Za-z0-9][A-Za-z0-9.\-]*",
    size=r"[A-Za-z0-9][A-Za-z0-9.\-]*",
    branch=r"\d+",
    mult=r"[0-9]+(\.[0-9]+)?",


def replicate_metrics(wildcards):
    """Opt-in seed replicates (fit.replicates): each listed cell retrained with each seed."""
    cells = REPLICATES.get("cells") or []
    if not cells:
        return []
    kept = {cell.id for cell in grid_cells()}
    unknown = sorted(set(cells) - kept)
    if unknown:
        raise ValueError(f"fit.replicates.cells: {unknown} are not cells of the grid; kept cells: {sorted(kept)}")
    train_seed = config["train"].get("seed", 0)
    return [f"{RESULTS}/replicates/{cell}/seed{seed}/metrics.json"
            for cell in cells for seed in REPLICATES.get("seeds", []) if seed != train_seed]


# ---- clinical utility (probe.smk, fit.smk)


def task_labels(wildcards=None):
    return [f"{RESULTS}/labels/{task}.parquet" for task in config["labels"]["tasks"]]


def probed_cells(wildcards):
    return [f"{RESULTS}/probes/{cell.id}/metrics.json" for cell in grid_cells()]


def baselines(wildcards=None):
    return [f"{RESULTS}/baseline/{task}.json" for task in config["labels"]["tasks"]]

# Light rules run on the submit host, not as cluster jobs.
localrules:
    fit,
    tune,
