"""Variant-scoring benchmark: variants/s and peak memory of the scoring core at long contexts.

    python benchmarks/bench_predict.py                       # reference model on the GPU
    python benchmarks/bench_predict.py --device cpu --tiny   # quick CPU smoke run of the script

Times :func:`genossm.score.score_table` (allele checks, window building, batched forward passes on
both strands, score reduction; no VCF parsing or output writing) on synthetic SNVs at random
positions of a random genome, for the reference model (d_model 256, 16 layers, random weights:
speed does not depend on training) at contexts 8,192, 131,072 and 1,048,576. The default score set
is ``llr`` (2 passes per SNV); ``--scores llr,cosine_distance`` adds the opt-in embedding score.
Each context first gets an untimed warm-up call of one full batch (kernel compilation,
autotuning). ``--compile`` torch.compiles each block (``GenoSSM.compile_blocks``); the warm-up call
then scores the whole table, so that every batch shape of the timed call (the last batch is
smaller) is compiled before it. ``--compile both`` measures each context without, then with
compilation (two models with the same seeded weights) and gives each compiled row its speed-up.
Runs on torch + numpy + pandas only (no pysam): the GPU machines have nothing else.
Prints a table; writes JSON to benchmarks/results/bench_predict.json (or --out).
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench_common import COMPILE_VARIANTS, REFERENCE, add_compile_args, add_speedups, compile_label, sync
from genossm.model import GenoSSM, GenoSSMConfig
from genossm.score.genome import Genome
from genossm.score.passes import TOKENS_PER_BATCH
from genossm.score.variants import score_table
from genossm.utils.cuda import is_out_of_memory

TINY = {"d_model": 16, "n_layer": 2}
VARIANTS = {8192: 512, 131072: 64, 1048576: 16}  # enough for a few seconds each at the goal rates


def synthetic(context: int, n: int, seed: int = 0):
    """A random contig of 3 x context bases and n SNVs in its middle third (windows never pad)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, 3 * context)
    positions = np.sort(rng.choice(np.arange(context, 2 * context), size=n, replace=False))  # 0-based
    alt = (codes[positions] + rng.integers(1, 4, n)) % 4
    table = pd.DataFrame({
        "chrom": "bench", "pos": positions + 1,
        "ref": ["ACGT"[c] for c in codes[positions]], "alt": ["ACGT"[c] for c in alt], "id": None,
    })
    return Genome.from_sequences({"bench": np.frombuffer(b"ACGT", np.uint8)[codes].tobytes()}), table


def build(config, context_length, device, compile_backend=None):
    """The model from seed 0 in eval mode; with ``compile_backend`` its blocks are compiled (one
    static-shape graph per batch shape)."""
    torch.manual_seed(0)
    model = GenoSSM(GenoSSMConfig(context_length=context_length, **config)).to(device).eval()
    return model.compile_blocks(backend=compile_backend, dynamic=False) if compile_backend else model


def measure(model, context, n, scores, batch_size, device, compiled=False):
    genome, table = synthetic(context, n)
    if compiled:  # drop earlier contexts' graphs: past dynamo's recompile limit blocks would run uncompiled
        torch._dynamo.reset()
    options = {"context": context, "scores": scores, "batch_size": batch_size, "device": device, "progress": False}
    # warm-up with at least one full batch (kernel compilation and autotuning for the timed shapes);
    # compiled: with every batch shape of the timed call (each new shape compiles)
    full = batch_size or max(1, TOKENS_PER_BATCH.get(device.type, 1 << 16) // context)
    start = time.perf_counter()
    score_table(model, genome, table if compiled else table.iloc[: min(n, full)], **options)
    sync(device)
    warmup_seconds = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    sync(device)
    start = time.perf_counter()
    result = score_table(model, genome, table, **options)
    sync(device)
    seconds = time.perf_counter() - start
    if not (result["status"] == "ok").all() or result["llr"].isna().any():
        raise RuntimeError(f"benchmark variants did not all score: {result['status'].value_counts().to_dict()}")
    passes = n * (2 if scores == ("llr",) else 6)  # llr: ref=alt pass per strand; cosine: ref + alt per strand
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else float("nan")
    return {"context": context, "variants": n, "passes": passes, "seconds": seconds, "variants_per_s": n / seconds,
            "bases_per_s": passes * context / seconds, "peak_gib": peak, "warmup_s": warmup_seconds, "status": "ok"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model and contexts (CPU smoke test)")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--n-layer", type=int)
    parser.add_argument("--contexts", help="comma-separated window lengths (default 8192,131072,1048576)")
    parser.add_argument("--variants", type=int, help="SNVs per context (default: 512 at 8k, 64 at 131k, 16 at 1M)")
    parser.add_argument("--scores", default="llr", help="comma-separated score set (default: llr)")
    parser.add_argument("--batch-size", type=int, help="windows per forward pass (default: ~1M tokens)")
    add_compile_args(parser, "context")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_predict.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    config = dict(TINY if args.tiny else REFERENCE)
    config.update({k: v for k, v in (("d_model", args.d_model), ("n_layer", args.n_layer)) if v})
    contexts = [int(c) for c in (args.contexts or ("256,1024" if args.tiny else "8192,131072,1048576")).split(",")]
    scores = tuple(args.scores.split(","))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    variants = COMPILE_VARIANTS[args.compile]
    models = {compiled: build(config, max(contexts), device, args.compile_backend if compiled else None)
              for compiled in variants}
    params = sum(p.numel() for p in models[variants[0]].parameters())
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"model {config}, {params / 1e6:.2f}M parameters, scores {scores}, device {device_name}, "
          f"compile {compile_label(args.compile, args.compile_backend)}", file=sys.stderr)

    rows = []
    for context in contexts:
        n = args.variants or (8 if args.tiny else VARIANTS.get(context, max(8, 2**23 // context)))
        for compiled in variants:  # peaks count from the memory already allocated: not the other model
            try:
                row = measure(models[compiled], context, n, scores, args.batch_size, device, compiled)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                if not is_out_of_memory(err):
                    raise
                row = {"context": context, "variants": n, "status": "out of memory"}
            row["compile"] = compiled
            print(f"  context {context:,}{' compiled' if compiled else ''}: {row['status']}", file=sys.stderr)
            rows.append(row)
    both = len(variants) > 1
    if both:
        add_speedups(rows, ("context",), "variants_per_s")

    nan = float("nan")
    extra = f" {'compile':>7} {'vs eager':>8}" if both else ""
    print(f"{'context':>10}{extra} {'variants':>9} {'seconds':>9} {'variants/s':>11} {'bases/s':>13} "
          f"{'peak GiB':>9}  status")
    for r in rows:
        extra = f" {'yes' if r['compile'] else 'no':>7} {r.get('vs_eager', nan):>8.2f}" if both else ""
        print(f"{r['context']:>10,}{extra} {r['variants']:>9} {r.get('seconds', nan):>9.2f} "
              f"{r.get('variants_per_s', nan):>11.2f} {r.get('bases_per_s', nan):>13,.0f} "
              f"{r.get('peak_gib', nan):>9.2f}  {r['status']}")

    result = {
        "benchmark": "bench_predict", "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": str(device), "device_name": device_name,
        "torch": torch.__version__, "model": config, "parameters": params, "scores": list(scores),
        "batch_size": args.batch_size, "compile": {"off": False, "on": True, "both": "both"}[args.compile],
        "compile_backend": args.compile_backend if args.compile != "off" else None, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
