# Genomes and read sets -> token stores (memory-mapped, with a manifest). A store is written
# atomically by genossm preprocess: a failed or interrupted job leaves no store behind.


rule preprocess:
    input:
        lambda wildcards: config["genomes"][wildcards.genome]["path"],
    output:
        directory("results/stores/genomes/{genome}"),
    log:
        "results/logs/preprocess/{genome}.log",
    benchmark:
        "results/benchmarks/preprocess/{genome}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("preprocess", "threads")
    resources:
        mem_mb=res("preprocess", "mem_mb"),
        runtime=res("preprocess", "runtime"),
    params:
        options=lambda wildcards: config["genomes"][wildcards.genome]["options"],
    shell:
        "genossm preprocess {input:q} -o {output:q} {params.options} 2> {log:q}"


rule preprocess_reads:
    input:
        unpack(reads_reference),
        reads=lambda wildcards: config["reads"][wildcards.readset]["path"],
    output:
        directory("results/stores/reads/{readset}"),
    log:
        "results/logs/preprocess_reads/{readset}.log",
    benchmark:
        "results/benchmarks/preprocess_reads/{readset}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("preprocess", "threads")
    resources:
        mem_mb=res("preprocess", "mem_mb"),
        runtime=res("preprocess", "runtime"),
    params:
        reference=lambda wildcards, input: (
            f"--reference {shlex.quote(input.reference)}" if "reference" in input.keys() else ""
        ),
        options=lambda wildcards: config["reads"][wildcards.readset]["options"],
    shell:
        "genossm preprocess {input.reads:q} -o {output:q} {params.reference} {params.options} 2> {log:q}"
