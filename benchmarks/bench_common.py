"""What the model benchmarks share (no Lightning import: bench_predict stays light)."""

import torch

REFERENCE = {"d_model": 256, "n_layer": 16}  # the reference model: Caduceus-131k size, 7.7M parameters
COMPILE_VARIANTS = {"off": [False], "on": [True], "both": [False, True]}  # --compile -> rows to measure
CHECKPOINTING = {"on": True, "off": False, "offload": "offload"}  # --checkpointing -> GenoSSMConfig value


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def add_compile_args(parser, unit):
    """``--compile [on|both]`` and ``--compile-backend``; ``unit`` names what "both" measures twice."""
    parser.add_argument("--compile", nargs="?", const="on", default="off", choices=list(COMPILE_VARIANTS),
                        help=f"torch.compile each block; both: measure each {unit} without, then with")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (aot_eager compiles fast: CPU tests)")


def add_checkpointing_arg(parser):
    parser.add_argument("--checkpointing", choices=list(CHECKPOINTING), default="on",
                        help="per-block activation checkpointing; offload: block inputs in pinned host memory")


def compile_label(mode, backend):
    """For header lines: ``off``, ``on (inductor)``, ``both (inductor)``."""
    return "off" if mode == "off" else f"{mode} ({backend})"


def add_speedups(rows, keys, metric):
    """``vs_eager`` of each compiled row: its ``metric`` over the uncompiled row's with the same
    ``keys`` values."""
    eager = {tuple(r[k] for k in keys): r for r in rows if not r["compile"] and r["status"] == "ok"}
    for r in rows:
        base = eager.get(tuple(r[k] for k in keys))
        if r["compile"] and r["status"] == "ok" and base:
            r["vs_eager"] = r[metric] / base[metric]
