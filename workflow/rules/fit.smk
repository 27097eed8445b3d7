# The laws: `fit` (loss laws from the trained cells) and `fit_utility` (utility laws from their probes).
# Two rules, so a new probe record never reruns the loss-law bootstraps and calibration.
LOSS_FIGURES = ["isoflops", "optimal_scaling", "parametric_contours", "loss_curves", "loss_frontier", "profile_landscape",
                "loss_epochs"]
UTILITY_FIGURES = ["utility_compute", "utility_loss"]


rule fit:
    """Scaling laws from every trained cell: IsoFLOPs parabolas, power laws, L(N, D) by variable projection
    and Epoch-style, calibration on the grid's own cells, backtest, sensitivity, frontier; figures and section."""
    input:
        metrics=lambda wildcards: PLAN.run_files(grid(), "metrics.json"),
        logs=lambda wildcards: PLAN.run_files(grid(), "log.csv"),  # the loss-curve figure reads them
        replicates=lambda wildcards: PLAN.replicate_metrics(grid()),
    output:
        scaling=f"{RESULTS}/fits/scaling.json",
        points=f"{RESULTS}/fits/points.csv",
        section=f"{RESULTS}/fits/scaling.md",
        figures=[
            report(f"{RESULTS}/figures/{name}.png", caption=f"../report/{name}.rst", category="Scaling laws")
            for name in LOSS_FIGURES
        ],
    params:
        settings=PLAN.settings("fit", exclude=("replicates",)),
    log:
        f"{RESULTS}/logs/fit.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        # One BLAS thread: the many small L-BFGS fits are far slower with contended threads.
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale fit --metrics {input.metrics} --out $(dirname {output.scaling}) "
        "--figures $(dirname {output.figures[0]}) --summary {output.section} --settings {params.settings:q} "
        "--replicates {input.replicates} > {log} 2>&1"


rule fit_utility:
    """Utility laws from every cell's probe: AUROC against compute (frontier) and against loss (two-stage),
    backtests, the rise with compute, the no-model baselines; figures and section."""
    input:
        metrics=lambda wildcards: PLAN.run_files(grid(), "metrics.json"),
        scaling=f"{RESULTS}/fits/scaling.json",
        probes=lambda wildcards: PLAN.probe_records(grid()),
        baselines=PLAN.baselines(),
    output:
        utility=f"{RESULTS}/fits/utility.json",
        table=f"{RESULTS}/fits/utility.csv",
        section=f"{RESULTS}/fits/utility.md",
        figures=[
            report(f"{RESULTS}/figures/{name}.png", caption=f"../report/{name}.rst", category="Clinical utility")
            for name in UTILITY_FIGURES
        ],
    params:
        settings=PLAN.utility_settings(),
    log:
        f"{RESULTS}/logs/fit_utility.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_utility.tsv"
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale fit-utility --metrics {input.metrics} --scaling {input.scaling} "
        "--probes {input.probes} --baselines {input.baselines} --out $(dirname {output.utility}) "
        "--figures $(dirname {output.figures[0]}) --summary {output.section} --settings {params.settings:q} > {log} 2>&1"
