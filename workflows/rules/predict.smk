# Score variant sets and embed region sets with each trained model.


rule predict:
    input:
        model="results/models/{model}/model",
        reference=lambda wildcards: genome_store(config["variants"][wildcards.vset]["genome"]),
        vcf=lambda wildcards: config["variants"][wildcards.vset]["path"],
    output:
        "results/predict/{model}/{vset}.parquet",
    log:
        "results/logs/predict/{model}/{vset}.log",
    benchmark:
        "results/benchmarks/predict/{model}/{vset}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("predict", "threads")
    resources:
        mem_mb=res("predict", "mem_mb"),
        runtime=res("predict", "runtime"),
        gpu=gpus("predict"),
        gpu_model=gpu_model(),
    params:
        device=device(),
        devices=max(1, gpus("predict")),
        options=config["predict"]["options"],
    shell:
        "genossm predict -m {input.model:q} -r {input.reference:q} -v {input.vcf:q} -o {output:q}"
        " --device {params.device} --devices {params.devices} --threads {threads} {params.options} 2> {log:q}"


rule embed:
    input:
        model="results/models/{model}/model",
        reference=lambda wildcards: genome_store(config["regions"][wildcards.rset]["genome"]),
        bed=lambda wildcards: config["regions"][wildcards.rset]["path"],
    output:
        "results/embed/{model}/{rset}.parquet",
    log:
        "results/logs/embed/{model}/{rset}.log",
    benchmark:
        "results/benchmarks/embed/{model}/{rset}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("embed", "threads")
    resources:
        mem_mb=res("embed", "mem_mb"),
        runtime=res("embed", "runtime"),
        gpu=gpus("embed"),
        gpu_model=gpu_model(),
    params:
        device=device(),
        devices=max(1, gpus("embed")),
        options=config["embed"]["options"],
    shell:
        "genossm embed -m {input.model:q} -r {input.reference:q} -b {input.bed:q} -o {output:q}"
        " --device {params.device} --devices {params.devices} {params.options} 2> {log:q}"
