from ehrscale.grid import GridSettings, job_resources, parse_cell_id, plan_from_config, single_cell_grid
from ehrscale.io import load_settings


def grid_cells():
    """The kept cells of the IsoFLOPs grid; known once the tokenize checkpoint has run."""
    tokens = checkpoints.tokenize.get().output[0]
    return plan_from_config(config, tokens)[0]


def trained_metrics(wildcards):
    return [f"{RESULTS}/runs/{cell.id}/metrics.json" for cell in grid_cells()]


def cell_resources(wildcards, input):
    cell = next(c for c in plan_from_config(config, input.tokens)[0] if c.id == wildcards.cell)
    stats = json.loads(Path(input.tokens, "stats.json").read_text())
    return job_resources(cell, config["model"]["context_length"], int(stats["vocab_size"]), config["cluster"])


def cell_sizes(wildcards):
    """Only this cell's size definition, so editing other sizes never reruns it."""
    sizes = config["model_sizes"]
    size = parse_cell_id(wildcards.cell)[0]
    return sizes if isinstance(sizes, str) else json.dumps({size: sizes[size]}, sort_keys=True)


rule train:
    """Train one IsoFLOPs cell from scratch; resumes from its checkpoint after preemption."""
    input:
        tokens=f"{RESULTS}/tokens",
    output:
        metrics=f"{RESULTS}/runs/{{cell}}/metrics.json",
        model=f"{RESULTS}/runs/{{cell}}/model.pt",
        log_csv=f"{RESULTS}/runs/{{cell}}/log.csv",
    params:
        run_dir=lambda wildcards: f"{RESULTS}/runs/{wildcards.cell}",
        sizes=cell_sizes,
        grid=lambda wildcards: json.dumps(single_cell_grid(wildcards.cell, GridSettings()), sort_keys=True),
        model=settings("model"),
        train=settings("train"),
    log:
        f"{RESULTS}/logs/train/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{cell}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=lambda wildcards, input: cell_resources(wildcards, input)["runtime"],
        mem_mb=lambda wildcards, input: cell_resources(wildcards, input)["mem_mb"],
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale train --tokens {input.tokens} --out {params.run_dir} --cell {wildcards.cell} "
        "--sizes {params.sizes:q} --grid {params.grid:q} --model {params.model:q} --settings {params.train:q} "
        "> {log} 2>&1"
