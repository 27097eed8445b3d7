rule labels:
    """One clinical task's labels, exactly in the MEDS label schema, from the timeline alone;
    beside them, labels/examples/<task>.parquet gives each example's hadm_id and split."""
    input:
        meds=f"{RESULTS}/meds",
        task=f"{config['labels']['task_dir']}/{{task}}.yaml",
        predicates=PLAN.aces_predicates(),
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
    resources:
        mem_mb=2000,
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        f"{MEM_BUDGET} ehrscale labels {{input.meds}} --task {{input.task}} --out {{output.labels}} "
        f"{{params.predicates}} > {{log}} 2>&1"
