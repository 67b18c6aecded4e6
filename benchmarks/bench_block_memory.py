"""What one block keeps for backward: bytes per position of the tensors autograd saves.

    python benchmarks/bench_block_memory.py              # compiled block (Inductor), bf16 autocast
    python benchmarks/bench_block_memory.py --compile off

Runs one reference-size block (d_model 256) forward under autograd on the scan custom op's path
(on a CPU its Triton kernels are interpreted, so keep --length small) and records every saved
tensor whose shape has a per-position dimension. Their bytes per position, times a window length,
are what the block holds between its forward and its backward (under checkpointing: while it is
recomputed and differentiated), the block input included. The chunk-boundary states (a few MB)
and weights do not grow with length and are left out. Prints a table; writes JSON.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from bench_common import REFERENCE


def saved_storages(module, hidden: torch.Tensor, per_position: set, dtype=None) -> list:
    """[(shape, dtype, bytes)] of the tensors ``module(hidden)`` saves for backward whose shape has a
    dimension in ``per_position``, one entry per storage, largest first; under autocast to ``dtype``
    when given."""
    storages = {}

    def keep(tensor):
        if per_position & set(tensor.shape):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = (list(tensor.shape), str(tensor.dtype), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), \
            torch.autocast(hidden.device.type, dtype=dtype, enabled=dtype is not None):
        module(hidden)
    return sorted(storages.values(), key=lambda s: -s[2])


def saved_per_position(compiled: bool, length: int, device: torch.device, backend: str):
    """saved_storages of one reference block under bf16 autocast on the scan custom op's path."""
    from genossm.kernels.scan import bidirectional
    from genossm.model import GenoSSMConfig
    from genossm.model.mixer import Block

    bidirectional.use_triton = lambda u: True  # the custom-op path a GPU takes, on any device
    torch.manual_seed(0)
    block = Block(GenoSSMConfig(**REFERENCE)).to(device)
    if compiled:
        block.compile(backend=backend, dynamic=False)
    halo = block.mixer.fwd.conv_weight.shape[1] - 1
    hidden = torch.randn(1, length, REFERENCE["d_model"], device=device, requires_grad=True)
    return saved_storages(block, hidden, {length, length + halo, length + 2 * halo}, torch.bfloat16)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--length", type=int, default=384, help="positions (not d_model, so shapes are unambiguous)")
    parser.add_argument("--compile", choices=["on", "off"], default="on")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_block_memory.json"))
    args = parser.parse_args(argv)
    if args.length == REFERENCE["d_model"]:
        parser.error(f"--length must differ from d_model ({REFERENCE['d_model']})")
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before genossm imports Triton

    saved = saved_per_position(args.compile == "on", args.length, torch.device(args.device), args.compile_backend)
    per_position = sum(nbytes for _, _, nbytes in saved) / args.length
    print(f"{'shape':>20} {'dtype':>15} {'bytes/position':>15}")
    for shape, dtype, nbytes in saved:
        print(f"{str(tuple(shape)):>20} {dtype:>15} {nbytes / args.length:>15.1f}")
    print(f"total {per_position:,.1f} bytes/position: {per_position * 2**20 / 2**30:.2f} GiB at 1M bases")
    result = {"benchmark": "bench_block_memory", "command": " ".join(["python", *sys.argv]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": args.device, "torch": torch.__version__,
              "model": REFERENCE, "compile": args.compile, "length": args.length, "saved": saved,
              "bytes_per_position": per_position, "gib_at_1m": per_position * 2**20 / 2**30}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
