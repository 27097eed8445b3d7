# ehrscale: raw MIMIC-IV CSVs -> MEDS -> tokens -> IsoFLOPs training grid -> scaling-law fits.
# The logic lives in src/ehrscale; the rules in workflow/rules only wire it together.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/fit.smk"


rule all:
    input:
        final_targets(),
    default_target: True
