"""Training-step benchmark: bases/s and peak memory of full masked-LM training steps.

    python benchmarks/bench_train.py                       # reference model on the GPU
    python benchmarks/bench_train.py --device cpu --tiny   # quick CPU smoke run of the script

A full step is what ``genossm train`` runs per batch: 15% masking, forward of the bidirectional
model under bf16 autocast, cross-entropy on the masked bases, backward, grad-norm clipping and an
AdamW step (``MaskedLMModule.masked_loss`` plus the optimizer; no Lightning loop or data loader).
Reference model: d_model 256, 16 layers, bidirectional, per-block activation checkpointing
(``--checkpointing off`` to compare; ``offload`` keeps the block inputs in pinned host memory).
Shapes: batch 8 x 131,072 and batch 1 x 1,048,576, then the longest window that trains at batch 1
(2M, 4M; out of memory is reported, not raised); ``--memory-cap-gib 80`` makes a larger GPU
behave like an 80 GB one for that search.
``--compile`` torch.compiles each block (``GenoSSM.compile_blocks``); ``--compile both`` measures
every shape without, then with compilation, each from the same seeded weights, and gives each
compiled row its speed-up over the uncompiled one. The first compiled call per shape compiles, so
compiled runs take at least 2 untimed warm-up steps.
Prints a table; writes JSON to benchmarks/results/bench_train.json (or --out).
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import memory_peak
from bench_common import (CHECKPOINTING, COMPILE_VARIANTS, REFERENCE, add_checkpointing_arg, add_compile_args,
                          add_speedups, compile_label, sync)
from genossm.train.module import MaskedLMModule
from genossm.utils.cuda import is_out_of_memory

TINY = {"d_model": 32, "n_layer": 2}
COMPILE_WARMUP = 2  # untimed steps per shape when compiling (the first call compiles)


def parse_shapes(text):
    """``"8x131072,1x1048576"`` -> [(8, 131072), (1, 1048576)]."""
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item]


def random_batch(batch, length, device, generator):
    ids = torch.randint(0, 4, (batch, length), generator=generator, device=device, dtype=torch.uint8)
    return {
        "input_ids": ids,
        "loss_mask": torch.ones(batch, length, dtype=torch.bool, device=device),
        "softmask": torch.zeros(batch, length, dtype=torch.bool, device=device),
        "seed": list(range(batch)),
    }


def model_config(tiny, checkpointing, d_model=None, n_layer=None):
    config = dict(TINY if tiny else REFERENCE)
    config.update({k: v for k, v in (("d_model", d_model), ("n_layer", n_layer)) if v})
    config["checkpointing"] = checkpointing
    return config


def warmup_steps(requested, compiling):
    """Untimed steps per shape: a compiled run's first step compiles, the second takes what is left
    to do once (memory pools for the compiled kernels)."""
    return max(requested, COMPILE_WARMUP) if compiling else requested


class MaskedLoss(torch.nn.Module):
    """The training loss as a forward: DDP syncs gradients of what its forward ran."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, batch):
        weighted, weight, _, _, _ = self.module.masked_loss(batch)
        return weighted / weight.clamp_min(1e-6)


def build(config, device, compile_backend=None):
    """(loss module, AdamW) on ``device``: a MaskedLMModule from seed 0 (every call, every rank: the
    same weights) inside :class:`MaskedLoss`; with ``compile_backend`` its blocks are compiled, one
    static-shape graph per input shape (what a training run, which keeps one shape, gets)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    module = MaskedLMModule(config).to(device)
    if compile_backend:
        module.model.compile_blocks(backend=compile_backend, dynamic=False)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    return MaskedLoss(module), optimizer


def train_step(model, optimizer, data, device, dtype):
    """One full training step of ``model`` (build's loss module, or a DDP wrapper of it); returns the loss."""
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(data)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def measure(model, optimizer, batch, length, device, steps, warmup, dtype, breakdown=0):
    """Seconds per full training step (median of ``steps``, after ``warmup`` untimed ones) and peak
    GPU memory allocated; with ``breakdown`` (CUDA), one more step recorded and the ``breakdown``
    largest allocation sites live at its peak (``memory_peak.record``)."""
    generator = torch.Generator(device=device).manual_seed(0)
    data = random_batch(batch, length, device, generator)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        loss = train_step(model, optimizer, data, device, dtype)
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = sorted(times[warmup:])[steps // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")  # weights included
    row = {"batch": batch, "length": length, "bases": batch * length, "s_per_step": seconds,
           "bases_per_s": batch * length / seconds, "peak_gib": peak, "loss": float(loss.detach()),
           "warmup_s": times[:warmup], "status": "ok"}
    if breakdown and device.type == "cuda":
        row["memory_breakdown"] = memory_peak.record(
            lambda: train_step(model, optimizer, data, device, dtype), device, breakdown)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes (CPU smoke test)")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--n-layer", type=int)
    add_checkpointing_arg(parser)
    parser.add_argument("--shapes", help="batch x length list (default 8x131072,1x1048576; '': none)")
    parser.add_argument("--longest", help="batch x length list to try in order, stopping at the first that does "
                                          "not fit (default 1x2097152,1x4194304; '': none)")
    parser.add_argument("--memory-cap-gib", type=float, help="cap this process's GPU memory (the allocator "
                        "fails beyond it), to find what fits a smaller GPU")
    parser.add_argument("--memory-breakdown", type=int, default=0, metavar="N",
                        help="CUDA: after each shape, record one more step and print the N largest "
                             "allocation sites live at its memory peak")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help=f"untimed steps per shape (at least "
                        f"{COMPILE_WARMUP} when compiling)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="autocast dtype (default bf16 on GPU)")
    add_compile_args(parser, "shape")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_train.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.memory_cap_gib and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), device)
    config = model_config(args.tiny, CHECKPOINTING[args.checkpointing], args.d_model, args.n_layer)
    shapes = parse_shapes(args.shapes if args.shapes is not None else
                          ("2x1024,1x4096" if args.tiny else "8x131072,1x1048576"))
    longest = parse_shapes(args.longest if args.longest is not None else
                           ("1x16384,1x32768" if args.tiny else "1x2097152,1x4194304"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    variants = COMPILE_VARIANTS[args.compile]
    warmup = warmup_steps(args.warmup, True in variants)  # the same for all rows of a --compile both run
    if warmup != args.warmup:
        print(f"--compile: {warmup} warm-up steps per shape (the first compiled call compiles)", file=sys.stderr)

    rows, params = [], None
    for compiled in variants:
        model, optimizer = build(config, device, args.compile_backend if compiled else None)
        if params is None:
            params = sum(p.numel() for p in model.parameters())
            print(f"model {config}, {params / 1e6:.2f}M parameters, {dtype}, device "
                  f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}"
                  f", compile {compile_label(args.compile, args.compile_backend)}", file=sys.stderr)
        for batch, length in shapes:
            rows.append(run_one(model, optimizer, batch, length, device, args.steps, warmup, dtype, compiled,
                                breakdown=args.memory_breakdown))
        for batch, length in longest:  # stop at the first size that does not fit
            rows.append(run_one(model, optimizer, batch, length, device, args.steps, warmup, dtype, compiled,
                                longest=True))
            if rows[-1]["status"] != "ok":
                break
        del model, optimizer  # free this variant's memory before the next one is built
    if len(variants) > 1:
        add_speedups(rows, ("batch", "length"), "bases_per_s")
    print_table(rows, both=len(variants) > 1)
    for r in rows:
        if "memory_breakdown" in r:
            memory_peak.print_breakdown(f"{r['batch']} x {r['length']:,}{' compiled' if r['compile'] else ''}",
                                        r["memory_breakdown"])
    trained = [r["length"] for r in rows if r.get("longest") and r["status"] == "ok"]
    for compiled in variants:
        fits = [r["length"] for r in rows if r.get("longest") and r["status"] == "ok" and r["compile"] == compiled]
        label = f" ({'compiled' if compiled else 'eager'})" if len(variants) > 1 else ""
        print(f"longest window that trains{label}: {max(fits):,}" if fits else
              f"longest window that trains{label}: none tried fit")

    result = {
        "benchmark": "bench_train", "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "dtype": str(dtype), "model": config, "parameters": params,
        "compile": {"off": False, "on": True, "both": "both"}[args.compile],
        "compile_backend": args.compile_backend if args.compile != "off" else None, "warmup": warmup,
        "memory_cap_gib": args.memory_cap_gib,
        "rows": rows, "longest_trained": max(trained) if trained else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


def run_one(model, optimizer, batch, length, device, steps, warmup, dtype, compiled, longest=False, breakdown=0):
    if compiled:  # drop earlier shapes' graphs: past dynamo's recompile limit blocks would run uncompiled
        torch._dynamo.reset()
    try:
        row = measure(model, optimizer, batch, length, device, steps, warmup, dtype, breakdown)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        optimizer.zero_grad(set_to_none=True)
        row = {"batch": batch, "length": length, "bases": batch * length, "status": "out of memory"}
    row["compile"] = compiled
    if longest:
        row["longest"] = True
    figures = (f", {row['bases_per_s']:,.0f} bases/s, {row['peak_gib']:.2f} GiB" if row["status"] == "ok" else "")
    print(f"  {batch} x {length:,}{' compiled' if compiled else ''}: {row['status']}{figures}", file=sys.stderr)
    return row


def print_table(rows, both):
    """One line per row; ``both`` adds the compile and speed-up columns."""
    nan = float("nan")
    extra = f" {'compile':>7} {'vs eager':>8}" if both else ""
    print(f"{'batch x length':>18}{extra} {'s/step':>9} {'bases/s':>12} {'peak GiB':>9}  status")
    for r in rows:
        extra = f" {'yes' if r['compile'] else 'no':>7} {r.get('vs_eager', nan):>8.2f}" if both else ""
        print(f"{r['batch']:>6} x {r['length']:>9,}{extra} {r.get('s_per_step', nan):>9.3f} "
              f"{r.get('bases_per_s', nan):>12,.0f} {r.get('peak_gib', nan):>9.2f}  {r['status']}")


if __name__ == "__main__":
    main()
