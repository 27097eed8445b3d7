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
        settings=PLAN.settings("tokenize", exclude=("threads", "memory_limit")),
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
        f"{MEM_BUDGET} ehrscale tokenize {{input}} {{output}} --settings {{params.settings:q}} "
        f"--threads {{threads}} --memory-limit {DUCKDB_MEMORY} > {{log}} 2>&1"
