"""E. coli held-out run: train the reference model on one GPU and report the held-out loss curve.

    python benchmarks/train_ecoli.py                          # ~10 minutes on an H100 (see --max-steps)
    python benchmarks/train_ecoli.py --tiny --max-steps 20    # CPU smoke run of the script

Builds a token store from the E. coli K-12 MG1655 genome (``--fasta``, default
``../shared/data/ecoli/GCF_000005845.2_ASM584v2_genomic.fna.gz``; the chromosome is circular) with
the last 10% (about 464 kb) held out as the "val" split, trains the reference model (d_model 256,
16 layers, bidirectional, bf16, 131,072-base windows, batch 8) with ``genossm.train.train``, and
validates every ``--val-every`` steps on fixed windows over the held-out 10% (training bases as
context, loss counted on held-out bases only). Prints the curve and writes it with the run's
settings to benchmarks/results/train_ecoli.json (or --out); the run directory (checkpoints, logs,
final model) is benchmarks/results/ecoli_run. Reading the gzip FASTA needs no pysam.

``--max-steps`` sets the length: about 10 minutes is 600 s x (bases/s of bench_train.py at 8 x
131,072) / 1,048,576 bases per step; ``--minutes M --bases-per-second R`` does that arithmetic.
On the device machine ``../shared`` is not there: copy the FASTA into a git-ignored folder of the
repository, carry it, and pass ``--fasta``.
"""

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genossm.store import TokenStore, build_store
from genossm.tokenize import BASES
from genossm.train import config_from_dict, train

DEFAULT_FASTA = Path("../shared/data/ecoli/GCF_000005845.2_ASM584v2_genomic.fna.gz")


def held_out_unigram_bits(store: TokenStore) -> float:
    """Entropy (bits) of the base composition of the held-out bases: what a context-free model reaches."""
    counts = np.zeros(len(BASES))
    for name, start, end in store.heldout("val"):
        ids, _ = store.window(name, start, end)
        counts += np.bincount(ids, minlength=7)[list(BASES)]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    parser.add_argument("--store", type=Path, default=Path("benchmarks/results/ecoli.store"))
    parser.add_argument("--run-dir", type=Path, default=Path("benchmarks/results/ecoli_run"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_ecoli.json"))
    parser.add_argument("--tiny", action="store_true", help="tiny model and windows (CPU smoke test)")
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--minutes", type=float, help="with --bases-per-second: pick max-steps for this long")
    parser.add_argument("--bases-per-second", type=float)
    parser.add_argument("--window", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument("--max-val-windows", type=int, help="evenly spaced subset of the held-out windows")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    window = args.window or (2048 if args.tiny else 131_072)
    batch = args.batch_size or (2 if args.tiny else 8)
    max_steps = args.max_steps
    if args.minutes and args.bases_per_second:
        max_steps = max(1, int(args.minutes * 60 * args.bases_per_second / (window * batch)))

    if not args.store.exists():
        if not args.fasta.exists():
            sys.exit(f"train_ecoli.py: {args.fasta}: not found (pass --fasta)")
        build_store([args.fasta], args.store, topology="circular", holdout_fraction=0.1, progress=False)
    store = TokenStore.open(args.store)

    model = {"d_model": 32, "n_layer": 2} if args.tiny else {"d_model": 256, "n_layer": 16, "checkpointing": True}
    config = config_from_dict({
        "seed": 0,
        "model": model,
        "data": {"store": str(args.store), "window": window, "batch_size": batch, "num_workers": args.num_workers,
                 "max_val_windows": args.max_val_windows or (8 if args.tiny else None)},
        "optim": {"lr": args.lr, "warmup_steps": min(args.warmup, max_steps // 4)},
        "trainer": {"max_steps": max_steps, "val_every_n_steps": args.val_every,
                    "checkpoint_every_n_steps": max(args.val_every, 100), "log_every_n_steps": 5},
    }, source="train_ecoli.py")
    start = time.time()
    run = train(config, run_dir=args.run_dir, resume=args.resume)
    elapsed = time.time() - start

    curve = []
    for version in sorted((run / "logs" / "csv").glob("version_*")):
        with open(version / "metrics.csv") as f:
            for row in csv.DictReader(f):
                if row.get("val_loss"):
                    curve.append({"step": int(row["step"]) + 1, "val_loss": float(row["val_loss"]),
                                  "val_bits_per_base": float(row["val_bits_per_base"]),
                                  "val_accuracy": float(row["val_accuracy"])})
    unigram = held_out_unigram_bits(store)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    heldout = sum(end - start for _, start, end in store.heldout("val"))

    print(f"E. coli, {heldout:,} held-out bases (last 10%), window {window:,} x batch {batch}, "
          f"{max_steps} steps in {elapsed / 60:.1f} min; context-free floor {unigram:.4f} bits/base")
    print(f"{'step':>6} {'val loss':>9} {'bits/base':>10} {'accuracy':>9}")
    for point in curve:
        print(f"{point['step']:>6} {point['val_loss']:>9.4f} {point['val_bits_per_base']:>10.4f} "
              f"{point['val_accuracy']:>9.4f}")
    result = {
        "benchmark": "train_ecoli", "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": device, "elapsed_s": elapsed, "config": config.to_dict(),
        "heldout_bases": heldout, "unigram_bits_per_base": unigram, "ln4": math.log(4), "curve": curve,
        "run_dir": str(run),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
