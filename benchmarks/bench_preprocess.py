"""Preprocessing benchmark: FASTA -> token store throughput, and random window reads.

    python benchmarks/bench_preprocess.py [--fasta PATH] [--reps 15] [--windows 2000] [--window 1000000]

Throughput counts the uncompressed FASTA bytes (sequence, line breaks and headers) per second of
wall time, for the E. coli K-12 genome (../shared/data/ecoli, gzip) and the same file decompressed
to plain text first. For gzip it also runs genossm with the stdlib zlib inflater (what runs when
the isal package is missing). Baseline in the same run: Biopython ``SeqIO.parse`` + ``str(record.seq)`` +
the same tokenizer and ``np.save`` per contig (the same token arrays, no soft-mask track, no
manifest). Each figure is the best of ``--reps`` runs into a fresh output directory (median also
reported). Window reads: random ``--window``-base windows from the store (linear contig, in
bounds; across the origin of the circular contig, which wraps; and a seeded random contig of the
same length, half lowercase, for the soft-mask track), in windows per second.
Prints a table; writes JSON to benchmarks/results/bench_preprocess.json (or --out).
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from genossm.io import files
from genossm.store import build_store, create_store
from genossm.tokenize import encode_with_softmask

REPO = Path(__file__).resolve().parents[1]
ECOLI = REPO.parent / "shared" / "data" / "ecoli" / "GCF_000005845.2_ASM584v2_genomic.fna.gz"


def timed(fn, reps, scratch):
    times = []
    for i in range(reps):
        out = scratch / f"run{i}"
        start = time.perf_counter()
        fn(out)
        times.append(time.perf_counter() - start)
        shutil.rmtree(out, ignore_errors=True)
    return min(times), statistics.median(times)


def build_with_zlib(path, out):
    """build_store with the stdlib zlib inflater instead of ISA-L (the fallback without isal)."""
    fast, files.inflate_lib = files.inflate_lib, zlib
    try:
        build_store([path], out, progress=False)
    finally:
        files.inflate_lib = fast


def biopython_baseline(path, out):
    from Bio import SeqIO

    out.mkdir()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        for i, record in enumerate(SeqIO.parse(handle, "fasta")):
            ids, _ = encode_with_softmask(str(record.seq), record.id)
            np.save(out / f"{i:06d}.tokens.npy", ids)


def window_rate(store, name, window, count, rng, wrap):
    length = store.length(name)
    if wrap:  # every window crosses the origin
        starts = rng.integers(length - window + 1, length, count)
    else:
        starts = rng.integers(0, length - window + 1, count)
    store.window(name, int(starts[0]), int(starts[0]) + window)  # map the file
    start = time.perf_counter()
    for s in starts:
        store.window(name, int(s), int(s) + window)
    elapsed = time.perf_counter() - start
    return count / elapsed, elapsed / count * 1e3


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", type=Path, default=ECOLI)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--window", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_preprocess.json")
    args = parser.parse_args()
    if not args.fasta.exists():
        raise SystemExit(f"{args.fasta} not found (the E. coli genome lives in ../shared/data/ecoli)")

    rows = []
    with tempfile.TemporaryDirectory(prefix="genossm-bench-") as tmp:
        scratch = Path(tmp)
        raw = gzip.decompress(args.fasta.read_bytes()) if args.fasta.suffix == ".gz" else args.fasta.read_bytes()
        plain = scratch / "genome.fa"
        plain.write_bytes(raw)
        inputs = [("gzip", args.fasta), ("plain", plain)] if args.fasta.suffix == ".gz" else [("plain", plain)]
        for kind, path in inputs:
            tools = [("genossm preprocess", lambda out, p=path: build_store([p], out, progress=False)),
                     ("Biopython SeqIO baseline", lambda out, p=path: biopython_baseline(p, out))]
            if kind == "gzip" and files.inflate_lib is not zlib:
                tools.insert(1, ("genossm, zlib (no isal)", lambda out, p=path: build_with_zlib(p, out)))
            for tool, fn in tools:
                best, median = timed(fn, args.reps, scratch)
                rows.append({"input": kind, "tool": tool, "best_s": best, "median_s": median,
                             "MB_per_s": len(raw) / best / 1e6, "MB_per_s_median": len(raw) / median / 1e6})

        store = build_store([args.fasta], scratch / "store", topology="circular", progress=False)
        name = store.names[0]
        rng = np.random.default_rng(0)
        linear = build_store([args.fasta], scratch / "linear", progress=False)
        # E. coli has no lowercase: a seeded random contig, half soft-masked, exercises the mask track.
        letters = np.frombuffer(b"ACGTacgt", dtype=np.uint8)[rng.integers(0, 8, store.length(name))]
        masked = create_store(scratch / "masked", [(name, letters.tobytes())])
        windows = {}
        for label, s, wrap in (("in bounds", linear, False), ("across the circular origin", store, True),
                               ("in bounds, 50% soft-masked", masked, False)):
            rate, ms = window_rate(s, name, args.window, args.windows, rng, wrap)
            windows[label] = {"windows_per_s": rate, "ms_per_window": ms}

    genossm_gz = next(r for r in rows if r["input"] == inputs[0][0] and r["tool"] == "genossm preprocess")
    baseline_gz = next(r for r in rows if r["input"] == inputs[0][0] and r["tool"].startswith("Bio"))
    result = {
        "benchmark": "preprocess",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "input": str(args.fasta),
        "uncompressed_bytes": len(raw),
        "bases": store.length(name),
        "reps": args.reps,
        "throughput": rows,
        "speedup_vs_biopython": baseline_gz["best_s"] / genossm_gz["best_s"],
        "window_bases": args.window,
        "window_reads": windows,
    }
    print(f"FASTA -> token store, {len(raw) / 1e6:.2f} MB uncompressed FASTA ({result['bases']:,} bases), "
          f"best / median of {args.reps}")
    print(f"{'input':<7} {'tool':<26} {'best ms':>9} {'MB/s':>8} {'median MB/s':>12}")
    for r in rows:
        print(f"{r['input']:<7} {r['tool']:<26} {r['best_s'] * 1e3:>9.1f} {r['MB_per_s']:>8.1f} "
              f"{r['MB_per_s_median']:>12.1f}")
    print(f"speedup over Biopython ({inputs[0][0]}): {result['speedup_vs_biopython']:.1f}x")
    print(f"\nrandom {args.window:,}-base windows ({args.windows} each)")
    for label, w in windows.items():
        print(f"  {label:<30} {w['windows_per_s']:>9.0f} windows/s  {w['ms_per_window']:.3f} ms/window")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
