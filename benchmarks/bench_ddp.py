"""Data-parallel (DDP) training benchmark: bases/s on 1 and on K GPUs, scaling efficiency, weights check.

    python benchmarks/bench_ddp.py                      # 1 GPU, then all visible GPUs
    python benchmarks/bench_ddp.py --gpus 4             # 1 GPU, then 4
    python benchmarks/bench_ddp.py --launcher srun --gpus 8    # inside a SLURM allocation
    python benchmarks/bench_ddp.py --device cpu --tiny --gpus 2  # CPU smoke run (gloo, 2 processes)
    python benchmarks/bench_ddp.py --compile            # blocks torch.compiled (at least 2 warm-up steps)

The step is ``bench_train.py``'s full masked-LM training step (its ``build`` and ``train_step``;
reference model: d_model 256, 16 layers, bidirectional, bf16 autocast, per-block checkpointing;
AdamW, grad-norm clipping; ``--compile``: blocks torch.compiled) under
torch.nn.parallel.DistributedDataParallel (nccl on CUDA, gloo on CPU), one window of ``--window``
bases per GPU per step; each rank draws its own random window, seeded by rank and step. Both
measurements run the same worker code in fresh processes (the 1-GPU one is DDP with one rank), so
scaling efficiency = bases/s(K) / (K x bases/s(1)) compares like with like. After the timed steps
every rank compares its parameters with rank 0's (all-gathered float64 checksums; max |difference|
and differing bits after a broadcast): identical weights give 0.0 and 0.

Workers are this script with ``--worker``. The parent starts them itself with torchrun's variables
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so ``torchrun --nproc_per_node=K
bench_ddp.py --worker`` also works, or with ``--launcher srun`` as ``srun --ntasks=K ... --worker
--launcher srun``, whose workers read SLURM_PROCID, SLURM_LOCALID and SLURM_NTASKS. Each rank prints
one result line; the parent prints a table and writes JSON to benchmarks/results/bench_ddp.json
(or --out). Out of memory is reported, not raised; differing weights or a failed rank exit 1.
NCCL multicast (NVLS) stays off unless the environment already sets NCCL_NVLS_ENABLE.
"""

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bench_common import CHECKPOINTING, add_checkpointing_arg, compile_label, sync
from bench_train import build, model_config, random_batch, train_step, warmup_steps
from genossm.utils.atomic import atomic_output
from genossm.utils.cuda import is_out_of_memory

RESULT_TAG = "BENCH_DDP_RANK "  # prefix of the one stdout line each worker rank prints
WORKER_ENV = {"NCCL_NVLS_ENABLE": "0", "NCCL_CUMEM_ENABLE": "0"}  # defaults; the user's values win


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, help="K: processes of the second measurement, one GPU each "
                        "(default: GPUs visible here, at least 1; on CPU: processes; with srun: tasks)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model and window (CPU smoke run)")
    parser.add_argument("--window", type=int, help="bases per GPU per step (default 1048576; tiny: 4096)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    add_checkpointing_arg(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile each block (GenoSSM.compile_blocks)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (aot_eager compiles fast: CPU tests)")
    parser.add_argument("--launcher", choices=["spawn", "srun"], default="spawn",
                        help="spawn: start worker processes here; srun: start them with srun (SLURM)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds a collective may wait")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_ddp.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.window = args.window or (4096 if args.tiny else 1 << 20)
    if args.steps < 1 or args.warmup < 0 or args.window < 1:
        parser.error("--steps and --window must be positive, --warmup not negative")
    warmup = warmup_steps(args.warmup, args.compile)
    if warmup != args.warmup and not args.worker:
        print(f"--compile: {warmup} warm-up steps (the first compiled call compiles)", file=sys.stderr)
    args.warmup = warmup
    return args


# ---------------------------------------------------------------- worker (one rank)


def rank_env(launcher):
    """(rank, local rank, world size) from torchrun's or srun's variables."""
    names = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS") if launcher == "srun" else \
        ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    missing = [n for n in names if n not in os.environ]
    if missing:
        sys.exit(f"bench_ddp --worker --launcher {launcher}: {', '.join(missing)} not set")
    return tuple(int(os.environ[n]) for n in names)


def worker(args):
    rank, local_rank, world = rank_env(args.launcher)
    for name, value in WORKER_ENV.items():
        os.environ.setdefault(name, value)  # read by NCCL when the communicator starts
    if args.device == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())  # srun may bind one GPU per task
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: one thread per process, no oversubscription
            torch.set_num_threads(1)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=args.timeout),
                            device_id=device if device.type == "cuda" else None)
    try:
        report = measure_rank(args, device, rank, world)
    finally:
        dist.destroy_process_group()
    report.update(rank=rank, local_rank=local_rank, world_size=world, host=socket.gethostname(),
                  env={name: os.environ.get(name) for name in [*WORKER_ENV, "OMP_NUM_THREADS"]})
    # one write() of the whole line: srun's tasks share one stdout file (O_APPEND), and print()
    # may write the text and the newline separately, so two ranks' lines could interleave
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (RESULT_TAG + json.dumps(report) + "\n").encode())


def measure_rank(args, device, rank, world):
    """This rank's step times, peak memory, last loss and weight comparison with rank 0."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    model, optimizer = build(model_config(args.tiny, CHECKPOINTING[args.checkpointing]), device,
                             args.compile_backend if args.compile else None)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None, gradient_as_bucket_view=True)
    report = {"device": str(device), "threads": torch.get_num_threads(),
              "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
              "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
              "parameters": sum(p.numel() for p in model.parameters()), "status": "ok"}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    warmup_times, times, seeds = [], [], []
    try:
        for step in range(args.warmup + args.steps):
            seed = rank * 1_000_003 + step  # a different window (and masking) per rank and step
            data = random_batch(1, args.window, device, torch.Generator(device=device).manual_seed(seed))
            data["seed"] = [seed]
            sync(device)
            start = time.perf_counter()
            loss = train_step(ddp, optimizer, data, device, dtype)
            sync(device)
            seconds = time.perf_counter() - start
            seeds.append(seed)
            (times if step >= args.warmup else warmup_times).append(seconds)
            if rank == 0:
                print(f"  {world} process(es), step {step + 1}/{args.warmup + args.steps}: {seconds:.3f} s",
                      file=sys.stderr)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        report["status"] = "out of memory"
    report["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None  # weights included
    if report["status"] == "ok":  # after an out-of-memory error the ranks' collectives may not line up
        report.update(times=times, warmup_s=warmup_times, s_per_step=statistics.median(times),
                      loss=float(loss.detach()), window_seeds=seeds, weights=compare_weights(model, world))
    return report


def compare_weights(module, world):
    """Checksums of every rank's parameters and this rank's difference from rank 0's, element by element."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])  # exact for fp32/bf16
    checksum = flat.sum().reshape(1)
    checksums = [torch.empty_like(checksum) for _ in range(world)]
    dist.all_gather(checksums, checksum)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    return {"checksums": [c.item() for c in checksums], "max_abs_diff": (flat - reference).abs().max().item(),
            "bits_differ": int((flat.view(torch.int64) != reference.view(torch.int64)).sum())}


# ---------------------------------------------------------------- parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def skip_reason(processes, device, gpus_visible):
    """Why a measurement with ``processes`` ranks cannot run here (None if it can)."""
    if device == "cuda" and processes > gpus_visible:
        return f"skipped: only {gpus_visible} GPU{'' if gpus_visible == 1 else 's'}"
    return None


def worker_command(args, processes):
    """Commands (with environments) that start the ranks of one measurement."""
    script = [sys.executable, str(Path(__file__).resolve()), "--worker", "--launcher", args.launcher,
              "--device", args.device, "--window", str(args.window), "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--checkpointing", args.checkpointing, "--timeout", str(args.timeout),
              "--compile-backend", args.compile_backend, *(["--tiny"] if args.tiny else []),
              *(["--compile"] if args.compile else [])]
    default_addr = socket.gethostname() if args.launcher == "srun" else "127.0.0.1"  # srun: rank 0 runs here
    env = {**os.environ, "MASTER_ADDR": os.environ.get("MASTER_ADDR", default_addr),
           "MASTER_PORT": str(free_port())}
    if args.launcher == "srun":
        return [(["srun", f"--ntasks={processes}", "--kill-on-bad-exit=1", *script], env)]
    return [(script, {**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(processes)})
            for r in range(processes)]


def launch(args, processes):
    """Run one measurement in fresh worker processes; returns its row."""
    print(f"measuring {processes} process(es) ({args.launcher})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_ddp-") as tmp:
        procs, outputs = [], []
        for i, (command, env) in enumerate(worker_command(args, processes)):
            outputs.append(Path(tmp) / f"stdout{i}")
            # a file, not a pipe: nothing blocks on a full buffer; append mode, because srun's tasks
            # share it and writes at a shared offset without O_APPEND can overwrite one another
            with open(outputs[-1], "a") as stdout:
                procs.append(subprocess.Popen(command, env=env, stdout=stdout))
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):  # the others would wait out the timeout
                time.sleep(5)
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
        lines = [line for path in outputs for line in path.read_text().splitlines()]
    reports = sorted((json.loads(line[len(RESULT_TAG):]) for line in lines if line.startswith(RESULT_TAG)),
                     key=lambda r: r["rank"])
    return summarize(args, processes, reports, [p.returncode for p in procs])


def summarize(args, processes, reports, codes):
    row = {"processes": processes, "window": args.window, "ranks": reports}
    if any(r["status"] == "out of memory" for r in reports):
        row["status"] = "out of memory"
    elif len(reports) != processes or any(codes):
        row["status"] = (f"failed: {len(reports)} of {processes} ranks reported, exit codes {codes} "
                         "(see stderr)")
    else:
        # the ranks wait for one another in the gradient all-reduce: a step lasts as long as its slowest rank
        steps = [max(step) for step in zip(*(r["times"] for r in reports))]
        seconds = statistics.median(steps)
        weights = [r["weights"] for r in reports]
        max_diff = max(w["max_abs_diff"] for w in weights)
        bits = sum(w["bits_differ"] for w in weights)
        identical = max_diff == 0.0 and bits == 0 and len(set(weights[0]["checksums"])) == 1
        row.update(status="ok" if identical else "weights differ across ranks", s_per_step=seconds,
                   bases_per_s=processes * args.window / seconds,
                   weights={"max_abs_diff": max_diff, "bits_differ": bits, "checksums": weights[0]["checksums"],
                            "identical": identical})
    peaks = [r["peak_gib"] for r in reports if r["peak_gib"] is not None]  # None on CPU
    row["peak_gib"] = max(peaks) if peaks else None
    print(f"  {processes} process(es): {row['status']}", file=sys.stderr)
    return row


def print_table(rows, header):
    print(header)
    print(f"{'processes':>9} {'s/step':>9} {'bases/s':>12} {'peak GiB':>9} {'efficiency':>10} "
          f"{'max |w - w0|':>12}  status")
    for r in rows:
        def cell(value, fmt, width):
            return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"
        print(f"{r['processes']:>9} {cell(r.get('s_per_step'), '.3f', 9)} {cell(r.get('bases_per_s'), ',.0f', 12)} "
              f"{cell(r.get('peak_gib'), '.2f', 9)} {cell(r.get('efficiency'), '.3f', 10)} "
              f"{cell(r.get('weights', {}).get('max_abs_diff'), '.3g', 12)}  {r['status']}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    gpus_visible = torch.cuda.device_count()
    local = args.launcher == "spawn"  # under srun the allocation, not this node, decides what fits
    if local and args.device == "cuda" and gpus_visible == 0:
        sys.exit("bench_ddp: --device cuda but no GPU is visible (use --device cpu)")
    processes = max(1, args.gpus if args.gpus is not None else gpus_visible)
    rows = []
    for n in sorted({1, processes}):
        reason = skip_reason(n, args.device, gpus_visible) if local else None
        if reason:
            print(f"bench_ddp: {n} processes asked for but {gpus_visible} GPU(s) visible: measuring 1 process "
                  f"only ({reason})", file=sys.stderr)
            rows.append({"processes": n, "window": args.window, "status": reason})
        else:
            rows.append(launch(args, n))
    one = rows[0]
    for r in rows[1:]:
        if "bases_per_s" in r and "bases_per_s" in one:
            r["efficiency"] = r["bases_per_s"] / (r["processes"] * one["bases_per_s"])

    ranks = [rank for r in rows for rank in r.get("ranks", [])]
    device_name = ranks[0]["device_name"] if ranks else None
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    config = model_config(args.tiny, CHECKPOINTING[args.checkpointing])
    print_table(rows, f"model {config}, {ranks[0]['parameters'] / 1e6 if ranks else float('nan'):.2f}M "
                      f"parameters, {dtype}, window {args.window:,} bases per process, {device_name or args.device}, "
                      f"compile {compile_label('on' if args.compile else 'off', args.compile_backend)}")

    result = {
        "benchmark": "bench_ddp", "command": shlex.join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": args.device, "device_name": device_name,
        "gpus_visible": gpus_visible, "torch": torch.__version__, "cuda": torch.version.cuda,
        "nccl": ranks[0]["nccl"] if ranks else None,
        "settings": {"gpus": processes, "window": args.window, "windows_per_process_per_step": 1,
                     "steps": args.steps, "warmup": args.warmup, "checkpointing": args.checkpointing,
                     "compile": args.compile, "compile_backend": args.compile_backend if args.compile else None,
                     "tiny": args.tiny, "launcher": args.launcher, "timeout_s": args.timeout, "dtype": dtype,
                     "backend": "nccl" if args.device == "cuda" else "gloo"},
        "model": config, "parameters": ranks[0]["parameters"] if ranks else None,
        "rows": rows, "scaling_efficiency": rows[-1].get("efficiency"),
    }
    with atomic_output(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    if any(r["status"].startswith(("failed", "weights differ")) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
