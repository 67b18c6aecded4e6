# Train a model on a token store. The run directory results/models/<model>/ (layout in
# genossm/train/run.py) keeps checkpoints and logs; only the exported model is declared as output,
# so a failed, killed or preempted job keeps its checkpoints and the next run resumes from
# checkpoints/last.ckpt at the step it reached. A changed trainer.max_steps continues the same
# run; to start a model afresh after changing its architecture, delete its run directory.

TRAIN = train_layout()


rule train:
    input:
        store=training_store,
        config=lambda wildcards: config["models"][wildcards.model]["config"],
    output:
        directory("results/models/{model}/model"),
    log:
        "results/logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    conda:
        "../envs/genossm.yaml"
    threads: res("train", "threads")
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=TRAIN["gpu"],
        gpu_model=TRAIN["gpu_model"],
        gres=TRAIN["gres"],
        mpi=TRAIN["mpi"],
        tasks=TRAIN["tasks"],
        tasks_per_node=TRAIN["tasks_per_node"],
        tasks_per_gpu=TRAIN["tasks_per_gpu"],
        nodes=TRAIN["nodes"],
    params:
        run_dir=lambda wildcards, output: os.path.dirname(output[0]),
        overrides=train_overrides,
        devices=config["gpu"]["train_devices"],
    shell:
        """
        launch=""
        if [ -n "${{SLURM_JOB_ID:-}}" ]; then
            launch="srun --nodes={resources.nodes} --ntasks-per-node={params.devices} --kill-on-bad-exit=1"
        fi
        resume=""
        if [ -f {params.run_dir:q}/checkpoints/last.ckpt ]; then
            resume="--resume"
        fi
        $launch genossm train --config {input.config:q} -o {params.run_dir:q} {params.overrides} $resume >{log:q} 2>&1
        """
