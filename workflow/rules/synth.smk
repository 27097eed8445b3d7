rule synthesize:
    """A synthetic cohort in MIMIC-IV's exact raw CSV layout (the default data)."""
    output:
        directory(f"{RESULTS}/raw"),
    params:
        patients=config["synthetic"]["patients"],
        seed=config["synthetic"]["seed"],
        density=config["synthetic"].get("density", "default"),
    log:
        f"{RESULTS}/logs/synthesize.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize.tsv"
    threads: 2
    conda:
        "../../envs/ehrscale.yaml"
    shell:
        "ehrscale synth {output} --patients {params.patients} --seed {params.seed} --density {params.density} "
        "--workers {threads} > {log} 2>&1"
