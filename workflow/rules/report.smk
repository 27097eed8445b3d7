# The report: summary.md, the fits' sections joined (`snakemake --report` adds the HTML report).


rule summary:
    """summary.md: the loss laws' section, then the utility laws' (when there are tasks)."""
    input:
        PLAN.summary_sections(),
    output:
        report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Summary"),
    log:
        f"{RESULTS}/logs/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale summary {input} --out {output} > {log} 2>&1"
