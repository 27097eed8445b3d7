rule probe:
    """Embed every task's labelled examples with one trained cell (frozen; GPU when asked).

    Only the device and the caps (which examples) are params: other probe settings never re-embed."""
    input:
        model=f"{RESULTS}/runs/{{cell}}/model.pt",
        tokens=f"{RESULTS}/tokens",
        labels=task_labels(),
    output:
        f"{RESULTS}/probes/{{cell}}/embeddings.npz",
    params:
        settings=json.dumps({k: v for k, v in config.get("probe", {}).items() if k in ("device", "max_train_examples", "max_tuning_examples")}, sort_keys=True),
        batch_tokens=config.get("probe", {}).get("batch_tokens", 16384),
    log:
        f"{RESULTS}/logs/probe/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{cell}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=lambda wildcards, input: cell_resources(wildcards.cell, input)["runtime"],
        mem_mb=lambda wildcards, input: cell_resources(wildcards.cell, input)["mem_mb"],
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale embed --model {input.model} --tokens {input.tokens} --labels {input.labels} --out {output} "
        "--settings {params.settings:q} --batch-tokens {params.batch_tokens} --threads {threads} > {log} 2>&1"


rule probe_fit:
    """The logistic-regression probe of one cell's embeddings on every task."""
    input:
        f"{RESULTS}/probes/{{cell}}/embeddings.npz",
    output:
        metrics=f"{RESULTS}/probes/{{cell}}/metrics.json",
        predictions=[f"{RESULTS}/probes/{{cell}}/{task}.predictions.parquet" for task in config["labels"]["tasks"]],
    params:
        settings=settings("probe", exclude=("device", "batch_tokens", "baseline_max_train_examples")),
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
        tokens=f"{RESULTS}/tokens",
        labels=f"{RESULTS}/labels/{{task}}.parquet",
    output:
        record=f"{RESULTS}/baseline/{{task}}.json",
        predictions=f"{RESULTS}/baseline/{{task}}.predictions.parquet",
    params:
        settings=settings("probe", exclude=("device", "batch_tokens")),
    log:
        f"{RESULTS}/logs/baseline/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/baseline/{{task}}.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale baseline --tokens {input.tokens} --labels {input.labels} "
        "--out {output.record} --predictions {output.predictions} --settings {params.settings:q} > {log} 2>&1"
