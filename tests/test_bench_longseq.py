"""benchmarks/bench_longseq.py on CPU (tiny model): one table row and one JSON row per length."""

import json
import subprocess
import sys

from conftest import REPO


def test_longseq_table_and_json(tmp_path):
    out = tmp_path / "longseq.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_longseq.py", "--device", "cpu", "--tiny",
                           "--lengths", "3000,5000", "--chunk", "1024", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["length"] for r in rows] == [3000, 5000]
    assert all(r["bases_per_s"] > 0 for r in rows)
    # the host buffer, float32 on the CPU: L x d_model (32) x 4 bytes
    assert [r["host_buffer_gib"] * 2**30 for r in rows] == [3000 * 32 * 4, 5000 * 32 * 4]
    assert "3,000" in proc.stdout and "5,000" in proc.stdout
