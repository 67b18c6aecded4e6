"""benchmarks/bench_predict.py runs (tiny CPU mode) where pysam and Biopython are missing, as on
the GPU machines."""

import json
import os
import subprocess
import sys

from conftest import REPO

BLOCKED = "import sys; sys.modules.update(pysam=None, Bio=None, snakemake=None); "


def run_bench(tmp_path, *extra):
    out = tmp_path / "bench.json"
    argv = ["bench_predict.py", "--device", "cpu", "--tiny", "--contexts", "64,128", "--variants", "4", *extra,
            "--out", str(out)]
    code = (BLOCKED + f"import runpy; sys.argv = {argv!r}; sys.path.insert(0, 'benchmarks'); "
            "runpy.run_path('benchmarks/bench_predict.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)  # two cores: one thread per process
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_bench_predict_tiny_runs_without_pysam(tmp_path):
    result, stdout = run_bench(tmp_path)
    assert [r["context"] for r in result["rows"]] == [64, 128]
    assert all(r["status"] == "ok" and r["variants_per_s"] > 0 for r in result["rows"])
    assert result["compile"] is False and not any(r["compile"] for r in result["rows"])
    assert "variants/s" in stdout  # the table goes to stdout, progress and notes to stderr


def test_bench_predict_compile_both(tmp_path):
    """Each context without, then with compiled blocks (aot_eager: Inductor takes minutes to compile
    on this CPU); the compilation falls in the warm-up call, not in the timed one."""
    result, stdout = run_bench(tmp_path, "--compile", "both", "--compile-backend", "aot_eager")
    rows = result["rows"]
    assert [(r["context"], r["compile"], r["status"]) for r in rows] == \
        [(64, False, "ok"), (64, True, "ok"), (128, False, "ok"), (128, True, "ok")]
    assert result["compile"] == "both" and result["compile_backend"] == "aot_eager"
    for eager, compiled in (rows[:2], rows[2:]):
        assert compiled["warmup_s"] > 5 * compiled["seconds"]
        assert compiled["vs_eager"] == compiled["variants_per_s"] / eager["variants_per_s"]
    assert "vs eager" in stdout
