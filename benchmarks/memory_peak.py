"""Where the peak of GPU memory goes: the allocations live at the peak of a recorded stretch,
grouped by the project source line that made them (from torch.cuda.memory's allocation history).

``record(fn)`` runs ``fn`` with the history on and returns the peak above what was allocated
before, and the sites of what was live at that peak. An allocation counts from its ``alloc`` event
to its ``free_completed`` event (when the allocator may hand it out again).
"""

from collections import defaultdict

import torch

PROJECT_DIRS = ("/genossm/", "/kernels/", "/benchmarks/")


def peak_allocations(trace: list) -> tuple[int, list]:
    """(peak bytes, trace entries live at the peak) of one device's trace entries (dicts with
    ``action``, ``addr``, ``size``), counting only allocations made within the trace."""
    live, total, peak, peak_at = {}, 0, 0, -1
    for i, entry in enumerate(trace):
        if entry["action"] == "alloc":
            live[entry["addr"]] = entry["size"]
            total += entry["size"]
            if total > peak:
                peak, peak_at = total, i
        elif entry["action"] == "free_completed" and entry["addr"] in live:
            total -= live.pop(entry["addr"])
    at_peak = {}
    for entry in trace[:peak_at + 1]:
        if entry["action"] == "alloc":
            at_peak[entry["addr"]] = entry
        elif entry["action"] == "free_completed":
            at_peak.pop(entry["addr"], None)
    return peak, list(at_peak.values())


def site(entry: dict) -> str:
    """The innermost project frame of an allocation (``path:line function``), else its innermost
    frame; frames are listed innermost first."""
    frames = entry.get("frames") or []
    for frame in frames:
        for directory in PROJECT_DIRS:
            if directory in frame["filename"]:
                path = directory.strip("/") + "/" + frame["filename"].split(directory, 1)[1]
                return f"{path}:{frame['line']} {frame['name']}"
    return frames[0]["name"] if frames else "unknown"


def by_site(entries: list, top: int) -> list[dict]:
    """[{site, gib, count}] of the ``top`` largest sites, then one row for the rest."""
    sizes, counts = defaultdict(int), defaultdict(int)
    for entry in entries:
        sizes[site(entry)] += entry["size"]
        counts[site(entry)] += 1
    rows = [{"site": s, "gib": sizes[s] / 2**30, "count": counts[s]}
            for s in sorted(sizes, key=sizes.get, reverse=True)]
    if len(rows) > top:
        rest = rows[top:]
        rows = rows[:top] + [{"site": f"(the other {len(rest)} sites)", "gib": sum(r["gib"] for r in rest),
                              "count": sum(r["count"] for r in rest)}]
    return rows


def record(fn, device: torch.device, top: int = 15) -> dict:
    """Run ``fn()`` with the allocation history on; returns the memory allocated before it, the peak
    above that, and the sites live at the peak (``by_site``)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.memory._record_memory_history(max_entries=1_000_000)
    try:
        fn()
        torch.cuda.synchronize(device)
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    index = device.index if device.index is not None else torch.cuda.current_device()
    peak, live = peak_allocations(snapshot["device_traces"][index])
    return {"allocated_before_gib": before / 2**30, "peak_above_gib": peak / 2**30, "sites": by_site(live, top)}


def print_breakdown(label: str, breakdown: dict):
    print(f"\n{label}: {breakdown['allocated_before_gib']:.2f} GiB allocated before the step, peak "
          f"{breakdown['peak_above_gib']:.2f} GiB above it; live at the peak:")
    for row in breakdown["sites"]:
        print(f"  {row['gib']:8.2f} GiB {row['count']:6d}  {row['site']}")
