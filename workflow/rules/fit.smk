FIGURES = ["isoflops", "optimal_scaling", "parametric_contours", "loss_curves", "loss_frontier"]
UTILITY_FIGURES = ["utility_compute", "utility_loss"]  # from the probes (probe.smk)


rule fit:
    """Scaling laws from every trained cell: IsoFLOPs parabolas, power laws, L(N, D), frontier; utility laws from the probes."""
    input:
        metrics=trained_metrics,
        logs=trained_logs,  # the loss-curve figure reads them
        probes=probed_cells,
        baselines=baselines(),
    output:
        scaling=f"{RESULTS}/fits/scaling.json",
        points=f"{RESULTS}/fits/points.csv",
        summary=report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Summary"),
        figures=[
            report(f"{RESULTS}/figures/{name}.png", caption=f"../report/{name}.rst", category="Scaling laws")
            for name in FIGURES
        ],
        utility=f"{RESULTS}/fits/utility.json",
        utility_table=f"{RESULTS}/fits/utility.csv",
        utility_figures=[
            report(f"{RESULTS}/figures/{name}.png", caption=f"../report/{name}.rst", category="Clinical utility")
            for name in UTILITY_FIGURES
        ],
    params:
        settings=settings("fit"),
    log:
        f"{RESULTS}/logs/fit.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        # One BLAS thread: the many small L-BFGS fits are far slower with contended threads.
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale fit --metrics {input.metrics} --out $(dirname {output.scaling}) "
        "--figures $(dirname {output.figures[0]}) --summary {output.summary} --settings {params.settings:q} "
        "--probes {input.probes} --baselines {input.baselines} > {log} 2>&1"
