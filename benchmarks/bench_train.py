"""Training-step benchmark: bases/s and peak memory of full masked-LM training steps.

    python benchmarks/bench_train.py                       # reference model on the GPU
    python benchmarks/bench_train.py --device cpu --tiny   # quick CPU smoke run of the script

A full step is what ``genossm train`` runs per batch: 15% masking, forward of the bidirectional
model under bf16 autocast, cross-entropy on the masked bases, backward, grad-norm clipping and an
AdamW step (``MaskedLMModule.masked_loss`` plus the optimizer; no Lightning loop or data loader).
Reference model: d_model 256, 16 layers, bidirectional, per-block activation checkpointing
(``--checkpointing off`` to compare). Shapes: batch 8 x 131,072 and batch 1 x 1,048,576, then the
longest window that trains at batch 1 (2M, 4M; out of memory is reported, not raised).
Prints a table; writes JSON to benchmarks/results/bench_train.json (or --out).
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from genossm.train.module import MaskedLMModule
from genossm.utils.cuda import is_out_of_memory

REFERENCE = {"d_model": 256, "n_layer": 16}
TINY = {"d_model": 32, "n_layer": 2}


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


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(module, optimizer, batch, length, device, steps, warmup, dtype):
    """Seconds per full training step (median of ``steps``) and peak GPU memory allocated."""
    generator = torch.Generator(device=device).manual_seed(0)
    data = random_batch(batch, length, device, generator)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            weighted, weight, _, _, _ = module.masked_loss(data)
            loss = weighted / weight.clamp_min(1e-6)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")  # weights included
    return {"batch": batch, "length": length, "bases": batch * length, "s_per_step": seconds,
            "bases_per_s": batch * length / seconds, "peak_gib": peak, "loss": float(loss.detach()), "status": "ok"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes (CPU smoke test)")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--n-layer", type=int)
    parser.add_argument("--checkpointing", choices=["on", "off"], default="on")
    parser.add_argument("--shapes", help="batch x length list (default 8x131072,1x1048576)")
    parser.add_argument("--longest", help="batch-1 lengths to try in order (default 2097152,4194304)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="autocast dtype (default bf16 on GPU)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_train.json"))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    model_config = dict(TINY if args.tiny else REFERENCE)
    model_config.update({k: v for k, v in (("d_model", args.d_model), ("n_layer", args.n_layer)) if v})
    model_config["checkpointing"] = args.checkpointing == "on"
    shapes = parse_shapes(args.shapes or ("2x1024,1x4096" if args.tiny else "8x131072,1x1048576"))
    longest = parse_shapes(args.longest or ("1x16384,1x32768" if args.tiny else "1x2097152,1x4194304"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    torch.manual_seed(0)
    module = MaskedLMModule(model_config).to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    params = sum(p.numel() for p in module.parameters())
    print(f"model {model_config}, {params / 1e6:.2f}M parameters, {dtype}, device "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}",
          file=sys.stderr)

    rows = []
    for batch, length in shapes:
        rows.append(run_one(module, optimizer, batch, length, device, args, dtype))
    for batch, length in longest:  # stop at the first size that does not fit
        rows.append(run_one(module, optimizer, batch, length, device, args, dtype, longest=True))
        if rows[-1]["status"] != "ok":
            break
    trained = [r["length"] for r in rows if r.get("longest") and r["status"] == "ok"]

    header = f"{'batch x length':>18} {'s/step':>9} {'bases/s':>12} {'peak GiB':>9}  status"
    print(header)
    for r in rows:
        print(f"{r['batch']:>6} x {r['length']:>9,} {r.get('s_per_step', float('nan')):>9.3f} "
              f"{r.get('bases_per_s', float('nan')):>12,.0f} {r.get('peak_gib', float('nan')):>9.2f}  {r['status']}")
    print(f"longest window that trains: {max(trained):,}" if trained else "longest window that trains: none tried fit")

    result = {
        "benchmark": "bench_train", "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "dtype": str(dtype), "model": model_config, "parameters": params,
        "rows": rows, "longest_trained": max(trained) if trained else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


def run_one(module, optimizer, batch, length, device, args, dtype, longest=False):
    try:
        row = measure(module, optimizer, batch, length, device, args.steps, args.warmup, dtype)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        optimizer.zero_grad(set_to_none=True)
        row = {"batch": batch, "length": length, "bases": batch * length, "status": "out of memory"}
    if longest:
        row["longest"] = True
    print(f"  {batch} x {length:,}: {row['status']}", file=sys.stderr)
    return row


if __name__ == "__main__":
    main()
