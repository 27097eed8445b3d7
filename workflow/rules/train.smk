rule train:
    """Train one IsoFLOPs cell from scratch; resumes from its checkpoint after preemption."""
    input:
        tokens=f"{RESULTS}/tokens",
    output:
        metrics=f"{RESULTS}/runs/{{cell}}/metrics.json",
        model=f"{RESULTS}/runs/{{cell}}/model.pt",
        log_csv=f"{RESULTS}/runs/{{cell}}/log.csv",
    params:
        sizes=cell_sizes,
        grid=lambda wildcards: json.dumps(single_cell_grid(wildcards.cell, GridSettings()), sort_keys=True),
        model=settings("model"),
        train=settings("train", exclude=("threads",)),
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
        # The shell ignores SIGTERM/SIGUSR1 (a scheduler's preemption signal), so it outlives the
        # trainer, which installs its own handler: it checkpoints and exits 75 (resume on rerun).
        "trap '' TERM USR1; ehrscale train --tokens {input.tokens} --out $(dirname {output.metrics}) --cell {wildcards.cell} "
        "--sizes {params.sizes:q} --grid {params.grid:q} --model {params.model:q} --settings {params.train:q} --threads {threads} "
        "> {log} 2>&1"
