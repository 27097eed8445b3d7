import functools
import json
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

sys.path.insert(0, str(Path(workflow.basedir, "src")))
from ehrscale.config import validate_config
from ehrscale.store import read_stats
from ehrscale.grid import GridSettings, job_resources, parse_cell_id, plan_from_config, single_cell_grid

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


def cell_resources(wildcards, input):
    cells, vocab_size = planned(input.tokens)
    return job_resources(cells[wildcards.cell], config["model"]["context_length"], vocab_size, config["cluster"])


def cell_sizes(wildcards):
    """Only this cell's size definition, so editing other sizes never reruns it."""
    sizes = config["model_sizes"]
    size = parse_cell_id(wildcards.cell)[0]
    return sizes if isinstance(sizes, str) else json.dumps({size: sizes[size]}, sort_keys=True)


# ---- opt-in seed replicates (fit.smk)

REPLICATES = config["fit"].get("replicates") or {}


wildcard_constraints:
    seed=r"\d+",


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
