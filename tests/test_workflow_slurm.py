"""Against a real SLURM cluster (`pytest -m slurm`; .ci/run starts a one-node one with
../shared/slurm/start-local-slurm.sh): the demo pipeline through the project's SLURM profile,
distributed training launched by `srun --ntasks=2`, and a cancelled training job that resumes.

The local cluster has no GPUs and no accounting database: the demo config keeps GPU requests off
(gpu.enabled: false; real clusters set it true), jobs run without an account and their status
comes from squeue. Its partition is `debug` and its memory is this machine's, so the test
replaces the profile's placeholder partitions and cluster-sized memory requests.
"""

import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from train_helpers import DDP_SCRIPT, make_store, tiny_config
from workflow_helpers import BIN, EMBEDDINGS, PREDICTIONS, copy_workflow, env, job_counts, snakemake
from workflow_helpers import demo_run  # noqa: F401  (the shared local demo run, a fixture)

def cluster_is_up() -> bool:
    """sbatch is installed and the controller reports a usable node."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and bool(re.search(r"idle|mixed|allocated", out.stdout))


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not cluster_is_up(),
                       reason="no running SLURM cluster here (.ci/run starts a local one)"),
]

LOCAL_CLUSTER = [
    "--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
    "--latency-wait", "5", "--jobs", "4", "--seconds-between-status-checks", "2",
    "--default-resources", "slurm_partition=debug", "mem_mb=2000", "runtime=30",
    "--set-resources", "train:mem_mb=4000", "predict:mem_mb=4000", "embed:mem_mb=4000",
]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
GENOSSM = str(BIN / "genossm")


def test_demo_pipeline_through_slurm_equals_the_local_run(demo_run, tmp_path):  # noqa: F811
    wf = copy_workflow(tmp_path / "wf")
    proc = snakemake(wf, "--profile", "workflows/profiles/slurm", *LOCAL_CLUSTER)
    counts = job_counts(proc.stdout)
    # every job but the local `all` went through sbatch
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", proc.stdout)
    assert len(set(submitted)) == sum(counts.values()) - 1, proc.stdout[-4000:]
    # the same inputs, settings and seeds give the same model, scores and embeddings
    pd.testing.assert_frame_equal(pd.read_parquet(wf / PREDICTIONS), pd.read_parquet(demo_run / PREDICTIONS))
    pd.testing.assert_frame_equal(pd.read_parquet(wf / EMBEDDINGS), pd.read_parquet(demo_run / EMBEDDINGS))
    assert "Nothing to be done" in snakemake(wf, "-n", "--profile", "workflows/profiles/slurm", *LOCAL_CLUSTER).stdout


def test_srun_two_tasks_train_the_same_weights(tmp_path):
    from genossm.train.config import save_config

    make_store(tmp_path / "store")
    config = tiny_config(tmp_path / "store", trainer={"max_steps": 4, "val_every_n_steps": 2,
                                                      "checkpoint_every_n_steps": 2})
    save_config(config, tmp_path / "cfg.yaml")
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    proc = subprocess.run(
        ["srun", "--ntasks=2", "--cpus-per-task=1", "--mem=3000", "--kill-on-bad-exit=1", "--time=10",
         sys.executable, str(tmp_path / "ddp.py"), str(tmp_path / "cfg.yaml"), str(tmp_path)],
        env={**env(), **SINGLE_THREAD}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    checkpoints = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]  # written once, by rank 0
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert all(torch.equal(ckpt["state_dict"][f"model.{k}"], v) for k, v in rank0.items())


def sbatch(*args, cwd) -> str:
    out = subprocess.run(["sbatch", "--parsable", "--ntasks=1", "--cpus-per-task=1", "--mem=3000", "--time=10",
                          "--export=ALL,OMP_NUM_THREADS=1,MKL_NUM_THREADS=1", *args],
                         cwd=cwd, env=env(), capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def job_state(job_id) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip() or "GONE"


def wait_for(job_id, timeout=600) -> str:
    deadline = time.monotonic() + timeout
    while (state := job_state(job_id)) in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        assert time.monotonic() < deadline, f"SLURM job {job_id} still {state}"
        time.sleep(1)
    return state


def final_weights(run):
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


def test_cancelled_training_job_resumes_without_repeating_or_losing_steps(tmp_path):
    from genossm.train.config import save_config

    make_store(tmp_path / "store")
    steps = 200
    config = tiny_config(tmp_path / "store", trainer={"max_steps": steps, "checkpoint_every_n_steps": 5,
                                                      "val_every_n_steps": 1000, "log_every_n_steps": 1})
    save_config(config, tmp_path / "cfg.yaml")
    train = f"{GENOSSM} train -c cfg.yaml"

    # reference: the same run, never interrupted
    ref = sbatch("--wrap", f"{train} -o ref", cwd=tmp_path)
    # the run SLURM cancels mid-way: SIGTERM to the job's processes, as on preemption or scancel
    job = sbatch("--wrap", f"{train} -o run", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (tmp_path / "run/checkpoints/last.ckpt").exists():
        assert time.monotonic() < deadline and job_state(job) in ("PENDING", "RUNNING"), job_state(job)
        time.sleep(0.2)
    subprocess.run(["scancel", job], check=True)
    assert wait_for(job) == "CANCELLED"
    stopped_at, _ = final_weights(tmp_path / "run")
    assert 0 < stopped_at < steps, "cancelled too late to test resume"

    # resubmitted: continues from the checkpoint written on SIGTERM
    resumed = sbatch("--wrap", f"{train} -o run --resume", cwd=tmp_path)
    assert wait_for(resumed) == "COMPLETED" and wait_for(ref) == "COMPLETED"
    (step_a, weights_a), (step_b, weights_b) = final_weights(tmp_path / "ref"), final_weights(tmp_path / "run")
    assert step_a == step_b == steps
    # data order and masking are functions of (seed, step, rank): same steps, same weights
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # the two attempts logged disjoint steps that together cover the run
    first, second = (set(pd.read_csv(tmp_path / f"run/logs/csv/version_{v}/metrics.csv")
                         .dropna(subset=["train_loss"])["step"]) for v in (0, 1))
    reference = set(pd.read_csv(tmp_path / "ref/logs/csv/version_0/metrics.csv").dropna(subset=["train_loss"])["step"])
    assert not first & second and first | second == reference
