"""Long-sequence inference with flat device memory: peak device memory and bases/s.

    python benchmarks/bench_longseq.py [--lengths 1048576,10485760,104857600] [--chunk 1048576]
    python benchmarks/bench_longseq.py --device cpu --tiny      # CPU smoke run

Runs ``genossm.model.longseq.long_forward`` (layer-by-layer schedule, residual stream in host
memory, bf16 on the GPU) of the reference model (d_model 256, 16 layers, random weights) over
random sequences of each length. Device memory should stay flat as the length grows; host memory
grows as L x d_model. ``--buffer-dir`` backs the host buffer with a file (beyond host RAM).
Prints a table; writes JSON to benchmarks/results/bench_longseq.json (or --out).
"""

import argparse
import json
import time
from pathlib import Path

import torch

from genossm.model import GenoSSM, GenoSSMConfig
from genossm.model.longseq import long_forward


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny model and lengths (CPU smoke)")
    ap.add_argument("--lengths", help="comma-separated (default 1M,10M,100M; tiny: 4k,16k)")
    ap.add_argument("--chunk", type=int, help="positions per chunk (default 1M; tiny: 1024)")
    ap.add_argument("--buffer-dir", type=Path, help="put the host buffer in a file here")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_longseq.json"))
    args = ap.parse_args()
    dev = torch.device(args.device)
    cfg = GenoSSMConfig(d_model=32, n_layer=2) if args.tiny else GenoSSMConfig()
    lengths = [int(n) for n in (args.lengths or ("4096,16384" if args.tiny else
                                                 "1048576,10485760,104857600")).split(",")]
    chunk = args.chunk or (1024 if args.tiny else 1 << 20)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = GenoSSM(cfg).to(dev).eval()
    # untimed warm-up: compiles every kernel variant the schedule uses (3 short chunks)
    long_forward(model, torch.randint(0, 4, (3 * 1024,)), chunk_size=1024, device=dev, dtype=dtype,
                 output="hidden", buffer_dtype=dtype)
    rows = []
    print(f"model d_model={cfg.d_model} n_layer={cfg.n_layer}, chunk {chunk:,}, {dtype}, {dev}")
    print(f"{'length':>12} {'seconds':>9} {'bases/s':>12} {'peak dev GiB':>13} {'host GiB':>9}", flush=True)
    for length in lengths:
        ids = torch.randint(0, 4, (length,), generator=torch.Generator().manual_seed(0))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        path = None if args.buffer_dir is None else args.buffer_dir / f"longseq_{length}.bin"
        t0 = time.perf_counter()
        out = long_forward(model, ids, chunk_size=chunk, device=dev, dtype=dtype, output="hidden",
                           buffer_dtype=dtype, buffer_path=path)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        r = {"length": length, "seconds": seconds, "bases_per_s": length / seconds, "peak_device_gib": peak,
             "host_buffer_gib": out.numel() * out.element_size() / 2**30}
        rows.append(r)
        del out
        # each row as it is measured: a longer length cut off by a time limit loses only itself
        print(f"{r['length']:>12,} {r['seconds']:>9.2f} {r['bases_per_s']:>12,.0f} "
              f"{r['peak_device_gib']:>13.2f} {r['host_buffer_gib']:>9.2f}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": str(dev), "model": cfg.to_dict(), "chunk": chunk,
                                        "rows": rows, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
                                       indent=1))

if __name__ == "__main__":
    main()
