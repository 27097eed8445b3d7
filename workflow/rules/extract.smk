rule extract:
    """Raw MIMIC-IV hosp/ and icu/ tables -> a MEDS dataset, split by patient."""
    input:
        PLAN.raw_dir() if SOURCE != "meds" else [],
    output:
        directory(f"{RESULTS}/meds"),
    params:
        settings=PLAN.settings("extract", exclude=("threads", "memory_limit")),
        name=NAME,
    log:
        f"{RESULTS}/logs/extract.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract.tsv"
    threads: 8
    resources:
        mem_mb=8000,
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        f"{MEM_BUDGET} ehrscale extract {{input}} {{output}} --name {{params.name}} --settings {{params.settings:q}} "
        f"--threads {{threads}} --memory-limit {DUCKDB_MEMORY} > {{log}} 2>&1"


rule meds_import:
    """Any MEDS dataset (source meds) -> ehrscale's MEDS layout: validated with the meds schemas,
    the dataset's own splits (or ehrscale's keyed hash), no extraction."""
    input:
        config["dataset"].get("meds_dir") or [],
    output:
        directory(f"{RESULTS}/meds"),
    params:
        settings=PLAN.settings("extract", exclude=("threads", "memory_limit")),
    log:
        f"{RESULTS}/logs/meds_import.log",
    benchmark:
        f"{RESULTS}/benchmarks/meds_import.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        f"{MEM_BUDGET} ehrscale meds-import {{input}} {{output}} --settings {{params.settings:q}} --threads {{threads}} "
        f"--memory-limit {DUCKDB_MEMORY} > {{log}} 2>&1"


# Both rules write the MEDS dataset; the source decides which one makes it.
if SOURCE == "meds":
    ruleorder: meds_import > extract
else:
    ruleorder: extract > meds_import
