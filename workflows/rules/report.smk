# Figures for `snakemake --report`: training curves, score distributions with the separation of
# labelled variants (ROC AUC), and region embeddings. Each job writes one directory atomically.


rule report_training:
    input:
        "results/models/{model}/model",
    output:
        report(
            directory("results/report/{model}/training"),
            patterns=["{name}.png"],
            caption="../report/training.rst",
            category="Training",
            subcategory="{model}",
        ),
    log:
        "results/logs/report_training/{model}.log",
    benchmark:
        "results/benchmarks/report_training/{model}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input[0]),
    shell:
        "genossm report --metrics {params.run_dir:q} --title 'model {wildcards.model}' -o {output:q} 2> {log:q}"


rule report_variants:
    input:
        unpack(variant_labels),
        scores="results/predict/{model}/{vset}.parquet",
    output:
        report(
            directory("results/report/{model}/variants/{vset}"),
            patterns=["{name}.png", "{name}.tsv"],
            caption="../report/variants.rst",
            category="Variant scores",
            subcategory="{model}",
        ),
    log:
        "results/logs/report_variants/{model}/{vset}.log",
    benchmark:
        "results/benchmarks/report_variants/{model}/{vset}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    params:
        labels=lambda wildcards, input: (
            f"--labels {shlex.quote(input.labels)} {label_options(wildcards)}"
            if "labels" in input.keys()
            else ""
        ),
    shell:
        "genossm report --scores {input.scores:q} {params.labels}"
        " --title 'model {wildcards.model}, variants {wildcards.vset}' -o {output:q} 2> {log:q}"


rule report_regions:
    input:
        "results/embed/{model}/{rset}.parquet",
    output:
        report(
            directory("results/report/{model}/regions/{rset}"),
            patterns=["{name}.png"],
            caption="../report/regions.rst",
            category="Region embeddings",
            subcategory="{model}",
        ),
    log:
        "results/logs/report_regions/{model}/{rset}.log",
    benchmark:
        "results/benchmarks/report_regions/{model}/{rset}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    shell:
        "genossm report --embeddings {input:q} --title 'model {wildcards.model}, regions {wildcards.rset}'"
        " -o {output:q} 2> {log:q}"
