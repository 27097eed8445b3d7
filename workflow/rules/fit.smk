FIGURES = ["isoflops", "optimal_scaling", "parametric_contours", "loss_curves", "loss_frontier", "profile_landscape"]
UTILITY_FIGURES = ["utility_compute", "utility_loss"]  # from the probes (probe.smk)


rule train_replicate:
    """Retrain one cell with another seed (opt-in, fit.replicates): the noise of a cell's loss.
    Under WSD the whole schedule runs in this job (another seed is another stable phase)."""
    input:
        unpack(lambda wildcards: {"tokens": f"{RESULTS}/tokens", **tuned_lr(parse_cell_id(wildcards.cell)[0])}),
    output:
        metrics=f"{RESULTS}/replicates/{{cell}}/seed{{seed}}/metrics.json",
        model=f"{RESULTS}/replicates/{{cell}}/seed{{seed}}/model.pt",
        log_csv=f"{RESULTS}/replicates/{{cell}}/seed{{seed}}/log.csv",
    params:
        sizes=cell_sizes,
        grid=lambda wildcards: json.dumps(single_cell_grid(wildcards.cell, GridSettings()), sort_keys=True),
        model=settings("model"),
        train=lambda wildcards: json.dumps(
            {k: v for k, v in config["train"].items() if k != "threads"} | {"seed": int(wildcards.seed)}, sort_keys=True
        ),
        optional=lambda wildcards, input: optional_args(input),
    log:
        f"{RESULTS}/logs/replicates/{{cell}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/replicates/{{cell}}_seed{{seed}}.tsv"
    threads: config["train"].get("threads") or 1
    resources:
        gpu=config["cluster"]["gpus_per_job"],
        runtime=lambda wildcards, input: cell_resources(wildcards.cell, input)["runtime"],
        mem_mb=lambda wildcards, input: cell_resources(wildcards.cell, input)["mem_mb"],
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "trap '' TERM USR1; ehrscale train --tokens {input.tokens} --out $(dirname {output.metrics}) --cell {wildcards.cell} "
        "{params.optional} --sizes {params.sizes:q} --grid {params.grid:q} --model {params.model:q} --settings {params.train:q} --threads {threads} "
        "> {log} 2>&1"


rule fit:
    """Scaling laws from every trained cell: IsoFLOPs parabolas, power laws, L(N, D) by variable projection
    and Epoch-style, calibration on the grid's own cells, backtest, sensitivity, frontier; utility laws from the probes."""
    input:
        metrics=trained_metrics,
        logs=trained_logs,  # the loss-curve figure reads them
        replicates=replicate_metrics,
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
        settings=settings("fit", exclude=("replicates",)),
    log:
        f"{RESULTS}/logs/fit.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit.tsv"
    threads: 2  # the figures render in a second process while the utility laws fit
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        # One BLAS thread: the many small L-BFGS fits are far slower with contended threads.
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ehrscale fit --metrics {input.metrics} --out $(dirname {output.scaling}) "
        "--figures $(dirname {output.figures[0]}) --summary {output.summary} --settings {params.settings:q} "
        "--replicates {input.replicates} --probes {input.probes} --baselines {input.baselines} > {log} 2>&1"
