# ehrscale: raw MIMIC-IV CSVs (or any MEDS dataset) -> MEDS -> tokens -> IsoFLOPs training grid -> scaling laws.
# One rule file per stage, named for its package in src/ehrscale; the rules only wire the library together.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/tokens.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        PLAN.final_targets(),
    default_target: True
