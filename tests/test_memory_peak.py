"""benchmarks/memory_peak.py: the allocations live at the peak of a trace, grouped by project line."""

import pytest

from conftest import REPO


@pytest.fixture
def memory_peak(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import memory_peak

    return memory_peak


def frame(path, line, name):
    return {"filename": path, "line": line, "name": name}


TORCH = frame("/venv/torch/nn/functional.py", 10, "linear")
MIXER = frame("/src/genossm/model/mixer.py", 90, "forward")
SCAN = frame("/src/kernels/scan/op.py", 170, "_scan_backward")


def alloc(addr, size, *frames):
    return {"action": "alloc", "addr": addr, "size": size, "frames": list(frames)}


def free(addr, action="free_completed"):
    return {"action": action, "addr": addr, "size": 0}


def test_peak_is_the_live_set_at_the_largest_total(memory_peak):
    trace = [alloc(1, 100, TORCH, MIXER), alloc(2, 50, SCAN), free(2, "free_requested"), free(2),
             alloc(3, 70, SCAN), alloc(4, 30, TORCH), free(1), alloc(5, 10, TORCH), free(3)]
    peak, live = memory_peak.peak_allocations(trace)
    assert peak == 200  # 100 + 70 + 30: block 2 was reusable again before block 3 came
    assert sorted(e["addr"] for e in live) == [1, 3, 4]
    assert memory_peak.peak_allocations([free(9)]) == (0, [])  # frees of earlier allocations are ignored


def test_sites_name_the_innermost_project_frame(memory_peak):
    assert memory_peak.site(alloc(1, 1, TORCH, MIXER)) == "genossm/model/mixer.py:90 forward"
    assert memory_peak.site(alloc(1, 1, SCAN, MIXER)) == "kernels/scan/op.py:170 _scan_backward"
    assert memory_peak.site(alloc(1, 1, TORCH)) == "linear"
    assert memory_peak.site(alloc(1, 1)) == "unknown"
    rows = memory_peak.by_site([alloc(1, 2**30, SCAN), alloc(2, 2**30, SCAN), alloc(3, 2**29, TORCH, MIXER),
                                alloc(4, 2**20, TORCH)], top=2)
    assert [(r["site"], r["gib"], r["count"]) for r in rows] == [
        ("kernels/scan/op.py:170 _scan_backward", 2.0, 2), ("genossm/model/mixer.py:90 forward", 0.5, 1),
        ("(the other 1 sites)", 2**20 / 2**30, 1)]
