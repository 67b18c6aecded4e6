"""Selective-scan benchmark: our Triton kernels vs the PyTorch reference vs the bandwidth floor.

    python benchmarks/bench_scan.py [--lengths 4096,65536,262144,1048576] [--dim 512] [--state 16]

Shapes: batch 1, D channels, N states, bf16 inputs. Per length: forward ms and forward+backward ms
for one direction (with gate z, D skip, softplus delta) and for the fused bidirectional op; the
PyTorch reference where it fits; achieved GB/s (bytes that must move: every input read once,
every output written once) against a device-to-device copy measured in the same run; peak memory.
Prints a table; writes JSON to benchmarks/results/bench_scan.json (or --out).
"""

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch
import triton.testing

from genossm.kernels import bidirectional_selective_scan, selective_scan, selective_scan_ref
from genossm.kernels.scan.op import TUNING

# launch configurations tried by --sweep: ScanTuning fields changed from the defaults
SWEEP = [{}, {"programs_per_sm": 19}, {"programs_per_sm": 12}, {"groups": 16}, {"groups": 4}]


def bench(fn, reps=20):
    return triton.testing.do_bench(fn, warmup=25, rep=reps * 10, return_mode="median")


def copy_bandwidth(dev):
    x = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() / ms / 1e6  # GB/s, read + write


def inputs(length, dim, nstate, dev, gen):
    def r(*s, scale=1.0):
        return (torch.randn(*s, device=dev, generator=gen) * scale).to(torch.bfloat16)

    return dict(u=r(1, length, dim), delta=r(1, length, dim, scale=0.5),
                A=-(torch.rand(dim, nstate, device=dev, generator=gen) + 0.5),
                B=r(1, length, nstate), C=r(1, length, nstate),
                D=torch.randn(dim, device=dev, generator=gen),
                delta_bias=torch.randn(dim, device=dev, generator=gen) * 0.1)


def measure(length, dim, nstate, dev, with_ref):
    gen = torch.Generator(device=dev).manual_seed(0)
    f, r = inputs(length, dim, nstate, dev, gen), inputs(length, dim, nstate, dev, gen)
    z = torch.randn(1, length, dim, device=dev, generator=gen).to(torch.bfloat16)
    row = {"L": length}
    one = lambda x: selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=z,
                                   delta_bias=x["delta_bias"], delta_softplus=True)
    bidir = lambda: bidirectional_selective_scan(*[f[k] for k in f], *[r[k] for k in r], z)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    row["fwd_ms"] = bench(lambda: one(f))
    leaves = {k: v.clone().requires_grad_(True) for k, v in f.items()}
    y = one(leaves)
    gy = torch.randn_like(y)
    row["fwdbwd_ms"] = bench(lambda: torch.autograd.grad(one(leaves), list(leaves.values()), gy))
    row["peak_gib_1dir"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    row["bidir_fwd_ms"] = bench(bidir)
    lf = {k: v.clone().requires_grad_(True) for k, v in f.items()}
    lr = {k: v.clone().requires_grad_(True) for k, v in r.items()}
    bidir_grad = lambda: torch.autograd.grad(
        bidirectional_selective_scan(*lf.values(), *lr.values(), z),
        list(lf.values()) + list(lr.values()), gy)
    torch.cuda.reset_peak_memory_stats()
    row["bidir_fwdbwd_ms"] = bench(bidir_grad)
    row["peak_gib_bidir"] = (torch.cuda.max_memory_allocated() - base) / 2**30
    # bytes that must move for one forward direction: u, delta, z read, y written (bf16), B, C
    row["fwd_bytes"] = 2 * (4 * length * dim + 2 * length * nstate)
    row["fwd_GBps"] = row["fwd_bytes"] / row["fwd_ms"] / 1e6
    if with_ref:
        row["ref_fwd_ms"] = bench(lambda: selective_scan_ref(
            f["u"], f["delta"], f["A"], f["B"], f["C"], D=f["D"], z=z, delta_bias=f["delta_bias"],
            delta_softplus=True, chunk_size=256), reps=3)
    return row


def sweep(length, dim, nstate, dev):
    """Time one direction (fwd, fwd+bwd) for each launch configuration in SWEEP."""
    gen = torch.Generator(device=dev).manual_seed(0)
    x = inputs(length, dim, nstate, dev, gen)
    z = torch.randn(1, length, dim, device=dev, generator=gen).to(torch.bfloat16)
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    one = lambda t: selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=z,
                                   delta_bias=t["delta_bias"], delta_softplus=True)
    gy = torch.randn(1, length, dim, device=dev, generator=gen).to(torch.bfloat16)
    rows = []
    defaults = dataclasses.asdict(TUNING)
    try:
        for cfg in SWEEP:
            for key, value in dict(defaults, **cfg).items():
                setattr(TUNING, key, value)
            try:
                fwd = triton.testing.do_bench(lambda: one(x), warmup=10, rep=150,
                                              return_mode="median")
                both = triton.testing.do_bench(
                    lambda: torch.autograd.grad(one(leaves), list(leaves.values()), gy),
                    warmup=10, rep=300, return_mode="median")
            except Exception as err:  # a configuration the compiler rejects (out of resources)
                fwd = both = float("nan")
                print(f"{cfg}: {type(err).__name__}: {str(err)[:200]}")
            rows.append({"config": cfg, "fwd_ms": fwd, "fwdbwd_ms": both})
            print(f"{cfg or 'defaults'}: fwd {fwd:.3f} ms  fwd+bwd {both:.3f} ms", flush=True)
    finally:
        for key, value in defaults.items():
            setattr(TUNING, key, value)
    return rows


def profile(length, dim, nstate, dev):
    """Per-kernel CUDA time of one direction's forward + backward (torch.profiler)."""
    gen = torch.Generator(device=dev).manual_seed(0)
    x = {k: v.requires_grad_(v.is_floating_point()) for k, v in
         inputs(length, dim, nstate, dev, gen).items()}
    z = torch.randn(1, length, dim, device=dev, generator=gen).to(torch.bfloat16)

    def step():
        y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=z,
                           delta_bias=x["delta_bias"], delta_softplus=True)
        torch.autograd.grad(y, list(x.values()), torch.ones_like(y))

    step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=20)
    print(table)
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="4096,65536,262144,1048576")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--state", type=int, default=16)
    ap.add_argument("--ref-max-length", type=int, default=65536)
    ap.add_argument("--out", default="benchmarks/results/bench_scan.json")
    ap.add_argument("--sweep", type=int, metavar="L", help="only sweep launch configs at length L")
    ap.add_argument("--profile", type=int, metavar="L",
                    help="only print per-kernel times of 3 fwd+bwd calls at length L")
    args = ap.parse_args()
    dev = torch.device("cuda")
    if args.profile:
        text = profile(args.profile, args.dim, args.state, dev)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_suffix(".profile.txt").write_text(text)
        return
    if args.sweep:
        rows = sweep(args.sweep, args.dim, args.state, dev)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_suffix(".sweep.json").write_text(json.dumps(rows, indent=1))
        return
    bw = copy_bandwidth(dev)
    rows = [measure(int(n), args.dim, args.state, dev, int(n) <= args.ref_max_length)
            for n in args.lengths.split(",")]
    cols = ["L", "fwd_ms", "fwdbwd_ms", "bidir_fwd_ms", "bidir_fwdbwd_ms", "fwd_GBps",
            "peak_gib_1dir", "peak_gib_bidir", "ref_fwd_ms"]
    print(f"device {torch.cuda.get_device_name()}  copy bandwidth {bw:.0f} GB/s  "
          f"D={args.dim} N={args.state} bf16 batch 1")
    print(" | ".join(f"{c:>15}" for c in cols))
    for row in rows:
        print(" | ".join(f"{row.get(c, float('nan')):>15.3f}" if c != "L" else f"{row[c]:>15}"
                         for c in cols))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "copy_GBps": bw,
                               "dim": args.dim, "state": args.state, "rows": rows,
                               "torch": torch.__version__, "host": platform.node(),
                               "time": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


if __name__ == "__main__":
    main()
