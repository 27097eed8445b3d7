# Training: one job per IsoFLOPs cell. Under train.schedule: wsd a cell is the cooldown of its
# size's stable phase, which a chain of `stable` jobs trains once per size (docs/wsd.md).
# tune.lr_multipliers adds each size's LR sweep (tune_run, tune) before any of its training.

# Jobs that train start with `trap '' TERM USR1`: the shell ignores a scheduler's preemption
# signal, so it outlives the trainer, whose own handler checkpoints and exits 75 (resume on rerun).


rule tune_run:
    """One LR of a size's sweep: its smallest cell, trained whole at a multiple of the width rule's LR.

    The winner is that cell, and under WSD its branch.pt the size's first stable segment: those
    jobs copy them. branch.pt is not an output: a run resumed past its branch point has none,
    and the segment then trains."""
    input:
        tokens=f"{RESULTS}/tokens",
    output:
        metrics=f"{RESULTS}/tune/{{size}}/x{{mult}}/metrics.json",
        model=f"{RESULTS}/tune/{{size}}/x{{mult}}/model.pt",
        log_csv=f"{RESULTS}/tune/{{size}}/x{{mult}}/log.csv",
    params:
        cell=lambda wildcards: tune_cell(wildcards.size).id,
        sizes=lambda wildcards: size_json(wildcards.size),
        grid=lambda wildcards: json.dumps(single_cell_grid(tune_cell(wildcards.size).id, GridSettings()), sort_keys=True),
        model=settings("model"),
        train=tune_settings,
        save_branch="--save-branch" if WSD else "",  # branch.pt: the first stable segment's state (not an output)
    log:
        f"{RESULTS}/logs/tune/{{size}}_x{{mult}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune/{{size}}_x{{mult}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=lambda wildcards, input: cell_resources(tune_cell(wildcards.size).id, input)["runtime"],
        mem_mb=lambda wildcards, input: cell_resources(tune_cell(wildcards.size).id, input)["mem_mb"],
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "trap '' TERM USR1; ehrscale train --tokens {input.tokens} --out $(dirname {output.metrics}) --cell {params.cell} "
        "--sizes {params.sizes:q} --grid {params.grid:q} --model {params.model:q} --settings {params.train:q} "
        "{params.save_branch} --threads {threads} > {log} 2>&1"


rule tune:
    """A size's peak LR: the sweep run with the lowest validation loss."""
    input:
        tune_runs,
    output:
        f"{RESULTS}/tune/{{size}}.json",
    log:
        f"{RESULTS}/logs/tune/{{size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune/{{size}}.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale tune --runs {input} --out {output} > {log} 2>&1"


rule stable:
    """One segment of a size's WSD stable phase, ending at one cell's branch point; resumable.
    Settings only the cooldowns use (STABLE_INDEPENDENT) are not its params: editing them retrains no chain."""
    input:
        unpack(stable_inputs),
    output:
        f"{RESULTS}/stable/{{size}}/T{{branch}}.pt",
    params:
        sizes=lambda wildcards: size_json(wildcards.size),
        model=settings("model"),
        train=settings("train", exclude=("threads", *STABLE_INDEPENDENT)),
        optional=lambda wildcards, input: optional_args(input),
    log:
        f"{RESULTS}/logs/stable/{{size}}_T{{branch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stable/{{size}}_T{{branch}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=lambda wildcards, input: stable_resources(wildcards, input)["runtime"],
        mem_mb=lambda wildcards, input: stable_resources(wildcards, input)["mem_mb"],
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "trap '' TERM USR1; ehrscale stable --tokens {input.tokens} --out {output} --size {wildcards.size} --until {wildcards.branch} "
        "{params.optional} --sizes {params.sizes:q} --model {params.model:q} --settings {params.train:q} "
        "--threads {threads} > {log} 2>&1"


rule train:
    """Train one IsoFLOPs cell (under WSD: its cooldown from the branch state); resumes after preemption."""
    input:
        unpack(train_inputs),
    output:
        metrics=f"{RESULTS}/runs/{{cell}}/metrics.json",
        model=f"{RESULTS}/runs/{{cell}}/model.pt",
        log_csv=f"{RESULTS}/runs/{{cell}}/log.csv",
    params:
        sizes=cell_sizes,
        grid=lambda wildcards: json.dumps(single_cell_grid(wildcards.cell, GridSettings()), sort_keys=True),
        model=settings("model"),
        train=settings("train", exclude=("threads",)),
        optional=lambda wildcards, input: optional_args(input),
    log:
        f"{RESULTS}/logs/train/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{cell}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=lambda wildcards, input: cell_resources(wildcards.cell, input)["runtime"],
        mem_mb=lambda wildcards, input: cell_resources(wildcards.cell, input)["mem_mb"],
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "trap '' TERM USR1; ehrscale train --tokens {input.tokens} --out $(dirname {output.metrics}) --cell {wildcards.cell} "
        "{params.optional} --sizes {params.sizes:q} --grid {params.grid:q} --model {params.model:q} "
        "--settings {params.train:q} --threads {threads} > {log} 2>&1"
