"""benchmarks/bench_block_memory.py on CPU, uncompiled (its Triton kernels interpreted)."""

import json
import subprocess
import sys

from conftest import REPO


def test_block_memory_table_and_json(tmp_path):
    out = tmp_path / "block.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_block_memory.py", "--device", "cpu", "--compile", "off",
                           "--length", "40", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    inner, width = 2 * 256, 256
    shapes = [tuple(shape) for shape, _, _ in result["saved"]]
    # under bf16 autocast: x, z, each direction's u and the pre-gate output in bf16 (the op remakes
    # delta from the low-rank dt input); the input in float32
    assert shapes.count((1, 40, inner)) == 5 and (1, 40, width) in shapes
    assert not any(40 + 3 in s or 40 + 6 in s for s in shapes)  # no padded copies of x
    assert result["bytes_per_position"] == sum(b for _, _, b in result["saved"]) / 40
    assert "GiB at 1M bases" in proc.stdout
