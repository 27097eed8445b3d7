checkpoint tokenize:
    """MEDS timelines -> ETHOS-style token streams; vocabulary and bins fitted on train only.

    A checkpoint: the training grid drops cells that would need too many epochs, which
    depends on how many train tokens there are.
    """
    input:
        f"{RESULTS}/meds",
    output:
        directory(f"{RESULTS}/tokens"),
    params:
        settings=settings("tokenize", exclude=("threads", "memory_limit")),
    log:
        f"{RESULTS}/logs/tokenize.log",
    benchmark:
        f"{RESULTS}/benchmarks/tokenize.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale tokenize {input} {output} --settings {params.settings:q} "
        f"--threads {{threads}} --memory-limit {DUCKDB_MEMORY} > {{log}} 2>&1"


rule labels:
    """One clinical task's labels, exactly in the MEDS label schema, from the timeline alone;
    beside them, labels/examples/<task>.parquet gives each example's hadm_id and split."""
    input:
        meds=f"{RESULTS}/meds",
        task=f"{config['labels']['task_dir']}/{{task}}.yaml",
        predicates=aces_predicates(),
    output:
        labels=f"{RESULTS}/labels/{{task}}.parquet",
        examples=f"{RESULTS}/labels/examples/{{task}}.parquet",
    params:
        predicates=lambda wildcards, input: f"--predicates {input.predicates}" if input.predicates else "",
    wildcard_constraints:
        task=r"[A-Za-z0-9_.-]+",
    log:
        f"{RESULTS}/logs/labels/{{task}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/labels/{{task}}.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale labels {input.meds} --task {input.task} --out {output.labels} "
        "{params.predicates} > {log} 2>&1"
