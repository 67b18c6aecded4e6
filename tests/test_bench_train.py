"""benchmarks/bench_train.py on CPU (tiny model): uncompiled rows, and ``--compile both`` with the
fast-compiling aot_eager backend (Inductor takes minutes to compile on this CPU)."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO


def run_bench(tmp_path, *extra):
    out = tmp_path / "bench_train.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--device", "cpu", "--tiny", "--steps", "2",
                           *extra, "--out", str(out)],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, proc.stderr


def test_tiny_uncompiled(tmp_path):
    result, stdout, stderr = run_bench(tmp_path, "--shapes", "2x256", "--longest", "1x512", "--warmup", "1")
    assert [(r["batch"], r["length"], r["compile"], r["status"]) for r in result["rows"]] == \
        [(2, 256, False, "ok"), (1, 512, False, "ok")]
    assert all(r["bases_per_s"] > 0 and math.isfinite(r["loss"]) and len(r["warmup_s"]) == 1 for r in result["rows"])
    assert result["compile"] is False and result["compile_backend"] is None and result["warmup"] == 1
    assert result["longest_trained"] == 512
    assert result["model"] == {"d_model": 32, "n_layer": 2, "checkpointing": True}
    assert "compile off" in stderr.splitlines()[0]
    assert stdout.splitlines()[0].split() == ["batch", "x", "length", "s/step", "bases/s", "peak", "GiB", "status"]
    assert "longest window that trains: 512" in stdout


def test_compile_both_side_by_side(tmp_path):
    result, stdout, stderr = run_bench(tmp_path, "--shapes", "2x256", "--longest", "", "--warmup", "0",
                                       "--compile", "both", "--compile-backend", "aot_eager")
    eager, compiled = result["rows"]
    assert (eager["compile"], compiled["compile"]) == (False, True)
    assert eager["status"] == compiled["status"] == "ok"
    assert result["compile"] == "both" and result["compile_backend"] == "aot_eager"
    assert result["warmup"] == 2 and len(compiled["warmup_s"]) == 2  # raised from --warmup 0
    # the same seeded weights and batch: the same loss; compiling only changes how it is computed
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)
    # the first compiled step compiles (seconds); the timed steps come after it
    assert compiled["warmup_s"][0] > 5 * compiled["s_per_step"]
    assert compiled["vs_eager"] == compiled["bases_per_s"] / eager["bases_per_s"]
    assert "vs_eager" not in eager
    assert "compile both (aot_eager)" in stderr
    columns = [line.split()[3:5] for line in stdout.splitlines()[1:3]]  # compile, vs eager
    assert columns == [["no", "nan"], ["yes", f"{compiled['vs_eager']:.2f}"]]
