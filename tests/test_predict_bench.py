"""benchmarks/bench_predict.py runs (tiny CPU mode) where pysam and Biopython are missing, as on
the GPU machines."""

import json
import subprocess
import sys

from conftest import REPO

BLOCKED = "import sys; sys.modules.update(pysam=None, Bio=None, snakemake=None); "


def test_bench_predict_tiny_runs_without_pysam(tmp_path):
    out = tmp_path / "bench.json"
    code = (BLOCKED + "import runpy; sys.argv = ['bench_predict.py', '--device', 'cpu', '--tiny', "
            f"'--contexts', '64,128', '--variants', '4', '--out', {str(out)!r}]; "
            "runpy.run_path('benchmarks/bench_predict.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["context"] for r in result["rows"]] == [64, 128]
    assert all(r["status"] == "ok" and r["variants_per_s"] > 0 for r in result["rows"])
    assert "variants/s" in proc.stdout  # the table goes to stdout, progress and notes to stderr
