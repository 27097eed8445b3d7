# Training: one job per IsoFLOPs cell. Under train.schedule: wsd a cell is the cooldown of its
# size's stable phase, which a chain of `stable` jobs trains once per size (docs/wsd.md).
# tune.lr_multipliers adds the LR sweep (tune_run per size and multiplier, then one tune) before any training;
# fit.replicates adds seed replicates of chosen cells (train_replicate).
# Jobs that train start with `trap '' TERM USR1` (ehrscale.plan.workflow.train_shell).


rule tune_run:
    """One LR of a size's sweep: its smallest cell, trained whole at a multiple of the width rule's LR.

    The winner is that cell, and under WSD its branch.pt the size's first stable segment: those
    jobs copy them. branch.pt is not an output: a run resumed past its branch point has none,
    and the segment then trains."""
    input:
        tokens=PLAN.tokens_dir,
    output:
        metrics=f"{RESULTS}/tune/{{size}}/x{{mult}}/metrics.json",
        model=f"{RESULTS}/tune/{{size}}/x{{mult}}/model.pt",
        log_csv=f"{RESULTS}/tune/{{size}}/x{{mult}}/log.csv",
    params:
        cell=lambda wildcards: PLAN.tune_cell(grid(), wildcards.size).id,
        sizes=lambda wildcards: PLAN.size_json(grid(), wildcards.size),
        grid=lambda wildcards: PLAN.cell_grid(PLAN.tune_cell(grid(), wildcards.size).id),
        model=PLAN.settings("model"),
        train=lambda wildcards: PLAN.tune_settings(grid(), wildcards.size, float(wildcards.mult)),
        save_branch="--save-branch" if PLAN.wsd else "",  # branch.pt: the first stable segment's state (not an output)
    log:
        f"{RESULTS}/logs/tune/{{size}}_x{{mult}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune/{{size}}_x{{mult}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=_tune_resource("runtime"),
        mem_mb=_tune_resource("mem_mb"),
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        train_shell("{params.cell}", before="", after="{params.save_branch} ")


rule tune:
    """Every size's peak LR from one rule fitted to the whole sweep: ln loss a parabola in ln LR
    whose optimum is a power law in N (ehrscale.train.tune)."""
    input:
        lambda wildcards: PLAN.all_sweep_runs(grid()),
    output:
        rule=PLAN.lr_rule_path,
        summary=PLAN.lr_rule_section,
    log:
        f"{RESULTS}/logs/tune.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale tune --runs {input} --out {output.rule} --summary {output.summary} > {log} 2>&1"


rule stable:
    """One segment of a size's WSD stable phase, ending at one cell's branch point; resumable.
    Settings only the cooldowns use (STABLE_INDEPENDENT) are not its params: editing them retrains no chain."""
    input:
        unpack(_stable_inputs),
    output:
        f"{RESULTS}/stable/{{size}}/T{{branch}}.pt",
    params:
        sizes=lambda wildcards: PLAN.size_json(grid(), wildcards.size),
        model=PLAN.settings("model"),
        train=PLAN.stable_settings(),
        optional=lambda wildcards, input: optional_args(input),
    log:
        f"{RESULTS}/logs/stable/{{size}}_T{{branch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stable/{{size}}_T{{branch}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=_stable_resource("runtime"),
        mem_mb=_stable_resource("mem_mb"),
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "trap '' TERM USR1; ehrscale stable --tokens {input.tokens} --out {output} --size {wildcards.size} --until {wildcards.branch} "
        "{params.optional} --sizes {params.sizes:q} --model {params.model:q} --settings {params.train:q} "
        "--threads {threads} > {log} 2>&1"


rule train:
    """Train one IsoFLOPs cell (under WSD: its cooldown from the branch state); resumes after preemption."""
    input:
        unpack(_train_inputs),
    output:
        metrics=f"{RESULTS}/runs/{{cell}}/metrics.json",
        model=f"{RESULTS}/runs/{{cell}}/model.pt",
        log_csv=f"{RESULTS}/runs/{{cell}}/log.csv",
    params:
        sizes=_cell_size_json,
        grid=lambda wildcards: PLAN.cell_grid(wildcards.cell),
        model=PLAN.settings("model"),
        train=PLAN.settings("train", exclude=("threads",)),
        optional=lambda wildcards, input: optional_args(input),
    log:
        f"{RESULTS}/logs/train/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{cell}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=_cell_resource("runtime"),
        mem_mb=_cell_resource("mem_mb"),
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        train_shell("{wildcards.cell}")


rule train_replicate:
    """Retrain one cell with another seed (opt-in, fit.replicates): the noise of a cell's loss.
    Under WSD the whole schedule runs in this job (another seed is another stable phase)."""
    input:
        unpack(lambda wildcards: {"tokens": PLAN.tokens_dir, **PLAN.tuned_lr()}),
    output:
        metrics=f"{RESULTS}/replicates/{{cell}}/seed{{seed}}/metrics.json",
        model=f"{RESULTS}/replicates/{{cell}}/seed{{seed}}/model.pt",
        log_csv=f"{RESULTS}/replicates/{{cell}}/seed{{seed}}/log.csv",
    params:
        sizes=_cell_size_json,
        grid=lambda wildcards: PLAN.cell_grid(wildcards.cell),
        model=PLAN.settings("model"),
        train=lambda wildcards: PLAN.replicate_train_settings(int(wildcards.seed)),
        optional=lambda wildcards, input: optional_args(input),
    log:
        f"{RESULTS}/logs/replicates/{{cell}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/replicates/{{cell}}_seed{{seed}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=_cell_resource("runtime"),
        mem_mb=_cell_resource("mem_mb"),
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        train_shell("{wildcards.cell}")
