# Clinical utility: each trained cell embeds every task's examples (embed), a logistic-regression
# probe scores them (probe), and a bag-of-codes baseline gives the no-model line per task (baseline).


rule embed:
    """Embed every task's labelled examples with one trained cell (frozen; GPU when asked).

    Only the device and the caps (which examples) are params: other probe settings never re-embed."""
    input:
        model=f"{RESULTS}/runs/{{cell}}/model.pt",
        tokens=PLAN.tokens_dir,
        labels=PLAN.task_labels(),
    output:
        f"{RESULTS}/probes/{{cell}}/embeddings.npz",
    params:
        settings=PLAN.embed_settings(),
        batch_tokens=PLAN.embed_batch_tokens(),
    log:
        f"{RESULTS}/logs/probe/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{cell}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=lambda wildcards, input: PLAN.cell_resources(grid(), wildcards.cell)["runtime"],
        mem_mb=lambda wildcards, input: PLAN.cell_resources(grid(), wildcards.cell)["mem_mb"],
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale embed --model {input.model} --tokens {input.tokens} --labels {input.labels} --out {output} "
        "--settings {params.settings:q} --batch-tokens {params.batch_tokens} --threads {threads} > {log} 2>&1"


rule probe:
    """The logistic-regression probe of one cell's embeddings on every task."""
    input:
        f"{RESULTS}/probes/{{cell}}/embeddings.npz",
    output:
        metrics=f"{RESULTS}/probes/{{cell}}/metrics.json",
        predictions=[f"{RESULTS}/probes/{{cell}}/{task}.predictions.parquet" for task in PLAN.tasks],
    params:
        settings=PLAN.settings("probe", exclude=("device", "batch_tokens", "baseline_max_train_examples")),
    log:
        f"{RESULTS}/logs/probe_fit/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe_fit/{{cell}}.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale probe --embeddings {input} --out $(dirname {output.metrics}) "
        "--settings {params.settings:q} > {log} 2>&1"


rule baseline:
    """The no-model baseline of one task: the same probe on bag-of-codes counts."""
    input:
        tokens=PLAN.tokens_dir,
        labels=f"{RESULTS}/labels/{{task}}.parquet",
    output:
        record=f"{RESULTS}/baseline/{{task}}.json",
        predictions=f"{RESULTS}/baseline/{{task}}.predictions.parquet",
    params:
        settings=PLAN.settings("probe", exclude=("device", "batch_tokens")),
    log:
        f"{RESULTS}/logs/baseline/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/baseline/{{task}}.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale baseline --tokens {input.tokens} --labels {input.labels} "
        "--out {output.record} --predictions {output.predictions} --settings {params.settings:q} > {log} 2>&1"
