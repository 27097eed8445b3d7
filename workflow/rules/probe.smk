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
    """The logistic-regression probes of one cell's embeddings on every task: alone, and with the count
    baseline's features of the same examples (what the model adds beyond counts)."""
    input:
        embeddings=f"{RESULTS}/probes/{{cell}}/embeddings.npz",
        counts=[f"{RESULTS}/baseline/{task}.counts.npz" for task in PLAN.tasks],
        counts_alone=[f"{RESULTS}/baseline/{task}.same_examples.predictions.parquet" for task in PLAN.tasks],
    output:
        metrics=f"{RESULTS}/probes/{{cell}}/metrics.json",
        predictions=[f"{RESULTS}/probes/{{cell}}/{task}.predictions.parquet" for task in PLAN.tasks],
    params:
        settings=PLAN.settings("probe", exclude=("device", "batch_tokens", "baseline_max_train_examples", "history")),
    log:
        f"{RESULTS}/logs/probe_fit/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe_fit/{{cell}}.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale probe --embeddings {input.embeddings} "
        "--baseline $(dirname {input.counts[0]}) --out $(dirname {output.metrics}) --settings {params.settings:q} > {log} 2>&1"


rule baseline:
    """The no-model lines of one task, by what they see: counts of the whole history on every train
    example, on the probe's own examples, and of the model's window only (ehrscale.probe.baseline)."""
    input:
        tokens=PLAN.tokens_dir,
        labels=f"{RESULTS}/labels/{{task}}.parquet",
    output:
        record=f"{RESULTS}/baseline/{{task}}.json",
        predictions=f"{RESULTS}/baseline/{{task}}.predictions.parquet",
        same_examples=f"{RESULTS}/baseline/{{task}}.same_examples.predictions.parquet",
        same_window=f"{RESULTS}/baseline/{{task}}.same_window.predictions.parquet",
        counts=f"{RESULTS}/baseline/{{task}}.counts.npz",
    params:
        settings=PLAN.settings("probe", exclude=("device", "batch_tokens", "history")),
        context_length=config["model"]["context_length"],
    log:
        f"{RESULTS}/logs/baseline/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/baseline/{{task}}.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        f"{MEM_BUDGET} OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale baseline --tokens {{input.tokens}} --labels {{input.labels}} "
        f"--out {{output.record}} --context-length {{params.context_length}} --settings {{params.settings:q}} > {{log}} 2>&1"
