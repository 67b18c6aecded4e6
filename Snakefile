# genossm pipeline: genomes and reads -> token stores -> trained models -> variant scores and
# region embeddings -> report. With no arguments beyond cores it runs the bundled demo (data/):
#
#     snakemake --cores 2                 # the whole chain on CPU, a few minutes
#     snakemake --report results/report.html
#
# Your own data: snakemake --cores 8 --configfile my.yaml (see workflows/config/config.yaml).
# A SLURM cluster: snakemake --profile workflows/profiles/slurm (see README.md).

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "workflows/config/config.yaml"


validate(config, "workflows/schemas/config.schema.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/preprocess.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/predict.smk"
include: "workflows/rules/report.smk"


report: "workflows/report/workflow.rst"


wildcard_constraints:
    genome=NAME_PATTERN,
    readset=NAME_PATTERN,
    model=NAME_PATTERN,
    vset=NAME_PATTERN,
    rset=NAME_PATTERN,


localrules:
    all,


rule all:
    default_target: True
    input:
        final_outputs(),
