"""benchmarks/bench_ddp.py on CPU: 1 and 2 gloo processes in one invocation, started by the script
itself or through srun (a stand-in that sets SLURM's task variables), and the report of a machine
with one GPU, where the 2-GPU measurement is skipped."""

import json
import os
import subprocess
import sys

from conftest import REPO

TINY_RUN = ["--device", "cpu", "--tiny", "--gpus", "2", "--window", "512", "--steps", "2", "--warmup", "1"]

# Stands in for `srun --ntasks=N [options] command`: N copies of the command with SLURM's task variables.
FAKE_SRUN = """#!/bin/sh
n=${1#--ntasks=}; shift
while [ "${1#--}" != "$1" ]; do shift; done
i=0; pids=""
while [ $i -lt $n ]; do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$n "$@" & pids="$pids $!"; i=$((i + 1))
done
status=0; for p in $pids; do wait $p || status=1; done; exit $status
"""


def run_bench(tmp_path, *extra, path_prefix=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT") and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")  # two cores: one thread per process
    if path_prefix:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    out = tmp_path / "bench_ddp.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_ddp.py", *TINY_RUN, *extra, "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def check_two_process_result(result, checkpointing=True):
    one, two = result["rows"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["status"] == two["status"] == "ok"
    assert one["bases_per_s"] > 0 and two["bases_per_s"] > 0
    assert two["efficiency"] == two["bases_per_s"] / (2 * one["bases_per_s"])
    assert result["scaling_efficiency"] == two["efficiency"]
    # the ranks trained on different windows ...
    rank0, rank1 = two["ranks"]
    assert (rank0["rank"], rank1["rank"]) == (0, 1) and rank0["world_size"] == 2
    assert not set(rank0["window_seeds"]) & set(rank1["window_seeds"])
    assert rank0["loss"] != rank1["loss"]
    assert rank0["window_seeds"] == one["ranks"][0]["window_seeds"]  # rank 0 sees the 1-process windows
    # ... and still end with the same weights, bit for bit
    assert two["weights"]["max_abs_diff"] == 0.0 and two["weights"]["bits_differ"] == 0
    assert two["weights"]["identical"] and len(two["weights"]["checksums"]) == 2
    assert all(r["weights"]["max_abs_diff"] == 0.0 and r["threads"] == 1 for r in two["ranks"])
    assert result["settings"]["backend"] == "gloo" and result["settings"]["window"] == 512
    assert result["settings"]["compile"] is False and result["settings"]["compile_backend"] is None
    assert result["model"] == {"d_model": 32, "n_layer": 2, "checkpointing": checkpointing}


def test_one_and_two_cpu_processes(tmp_path):
    result, stdout = run_bench(tmp_path)
    check_two_process_result(result)
    assert result["settings"]["launcher"] == "spawn"
    assert all(r["env"]["NCCL_NVLS_ENABLE"] == "0" for r in result["rows"][1]["ranks"])
    assert "bases/s" in stdout and "efficiency" in stdout  # the table goes to stdout, progress to stderr
    assert [line.split()[0] for line in stdout.splitlines()[2:]] == ["1", "2"]


def test_srun_launcher_reads_slurm_variables(tmp_path):
    # with the block inputs offloaded: their parameters' gradients still reach DDP's all-reduce
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    result, _ = run_bench(tmp_path, "--launcher", "srun", "--checkpointing", "offload", path_prefix=bin_dir)
    check_two_process_result(result, checkpointing="offload")
    assert result["settings"]["launcher"] == "srun"


def test_compiled_blocks_under_ddp(tmp_path):
    """--compile (aot_eager: Inductor takes minutes to compile on this CPU) raises --warmup 0 to 2
    steps, and the compilation falls in them, not in the timed steps."""
    result, stdout = run_bench(tmp_path, "--gpus", "1", "--warmup", "0", "--compile", "--compile-backend", "aot_eager")
    settings = result["settings"]
    assert (settings["compile"], settings["compile_backend"], settings["warmup"]) == (True, "aot_eager", 2)
    [row] = result["rows"]
    assert row["processes"] == 1 and row["status"] == "ok"
    [rank] = row["ranks"]
    assert len(rank["warmup_s"]) == 2 and len(rank["times"]) == 2
    assert rank["warmup_s"][0] > 5 * row["s_per_step"]
    assert "compile on (aot_eager)" in stdout.splitlines()[0]


def test_one_gpu_skips_k_and_reports_out_of_memory(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_ddp

    def out_of_memory(args, processes):  # what one rank that ran out of memory reports
        report = {"rank": 0, "status": "out of memory", "peak_gib": 139.5, "device_name": "H200",
                  "parameters": 7_720_000, "nccl": "2.27.5"}
        return bench_ddp.summarize(args, processes, [report], [0])

    monkeypatch.setattr(bench_ddp.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(bench_ddp, "launch", out_of_memory)
    bench_ddp.main(["--device", "cuda", "--gpus", "2", "--out", str(tmp_path / "r.json")])
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [(r["processes"], r["status"]) for r in rows] == [(1, "out of memory"), (2, "skipped: only 1 GPU")]
    assert rows[0]["peak_gib"] == 139.5
    out, err = capsys.readouterr()
    assert "skipped: only 1 GPU" in out and "out of memory" in out
    assert "1 GPU(s) visible" in err
