# Shared by the other .smk files: the validated config, the PLAN's logic (ehrscale.plan.workflow, torch-free
# and unit-tested) and the `ehrscale` shell function the rules call.
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

sys.path.insert(0, str(Path(workflow.basedir, "src")))
from ehrscale.core.config import validate_config
from ehrscale.plan.workflow import Dag, optional_args, train_shell

# Fails before any job runs, naming each bad key.
validate_config(config, Path(workflow.basedir, "workflow/schemas/config.schema.yaml"))

NAME = config["dataset"]["name"]
RESULTS = f"results/{NAME}"
SOURCE = config["dataset"]["source"]
PLAN = Dag(config, RESULTS)
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

# DuckDB gets three quarters of a job's memory: it overshoots its limit a little.
DUCKDB_MEMORY = "$(( {resources.mem_mb} * 3 / 4 ))MB"
# A data job's whole budget: past it the stage stops with a clear error (ehrscale.core.memory),
# before the kernel or SLURM kills it.
MEM_BUDGET = "EHRSCALE_MEM_MB={resources.mem_mb}"


wildcard_constraints:
    seed=r"\d+",
    cell=r"C[0-9p]+e-?[0-9]+_[A-Za-z0-9][A-Za-z0-9.\-]*(_u[0-9p]+)?",
    size=r"[A-Za-z0-9][A-Za-z0-9.\-]*(_u[0-9p]+)?",  # a size, or (stable chains) a size on a data fraction
    branch=r"\d+",
    mult=r"[0-9]+(\.[0-9]+)?",


def grid():
    """The planned grid: known once the tokenize checkpoint has run (until then Snakemake waits)."""
    return PLAN.planned(checkpoints.tokenize.get().output[0])


# ---- what training jobs ask of the grid (train.smk): Snakemake's part; the logic is PLAN's


def _cell_resource(key):
    return lambda wildcards, input: PLAN.cell_resources(grid(), wildcards.cell)[key]


def _tune_resource(key):
    return lambda wildcards, input: PLAN.cell_resources(grid(), PLAN.tune_cell(grid(), wildcards.size).id)[key]


def _stable_resource(key):
    return lambda wildcards, input: PLAN.segment_resources(grid(), wildcards.size, int(wildcards.branch))[key]


def _stable_inputs(wildcards):
    inputs = PLAN.stable_inputs(grid(), wildcards.size, int(wildcards.branch))
    if "start" in inputs:  # rerun from an inserted branch point, it is the same state (docs/wsd.md)
        inputs["start"] = ancient(inputs["start"])
    return inputs


def _train_inputs(wildcards):
    inputs = PLAN.train_inputs(grid(), wildcards.cell)
    if "branch" in inputs:
        inputs["branch"] = ancient(inputs["branch"])
    return inputs


def _cell_size_json(wildcards):
    return PLAN.size_json(grid(), PLAN.size_of(wildcards.cell))


# Light rules run on the submit host, not as cluster jobs.
localrules:
    fit,
    fit_utility,
    summary,
    tune,
