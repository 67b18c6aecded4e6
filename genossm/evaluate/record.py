"""What every evaluation result records (command, commit, device, time), its JSON output, and the
tables printed from it."""

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from genossm import __version__
from genossm.evaluate.recall import filtered_key
from genossm.utils.atomic import atomic_output

_PACKAGE = Path(__file__).resolve().parents[1]


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(device: torch.device) -> dict:
    commit, dirty = git_state()
    return {"genossm_version": __version__, "git_commit": commit, "git_dirty": dirty,
            "device": describe_device(device), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def git_state():
    """(commit, has uncommitted changes to tracked files) of the checkout genossm runs from, or
    (None, None) outside a git checkout (an installed wheel). Read-only: takes no index lock."""
    def git(*args):
        return subprocess.run(["git", "--no-optional-locks", "-C", str(_PACKAGE), *args], capture_output=True,
                              text=True, timeout=30)
    try:
        top = git("rev-parse", "--show-toplevel")
        # the checkout must be genossm's own, not some repository an installed copy happens to sit in
        if top.returncode or Path(top.stdout.strip()).resolve() / "genossm" != _PACKAGE:
            return None, None
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if head.returncode:
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def write_json(record: dict, output) -> None:
    """``record`` as JSON to the file ``output`` (written atomically) or to stdout for '-'."""
    text = json.dumps(record, indent=2) + "\n"
    if str(output) == "-":
        sys.stdout.write(text)
        return
    with atomic_output(output) as tmp:
        Path(tmp).write_text(text)


def recall_table(record: dict) -> str:
    c = record["config"]
    trained = [run for run in record["training"] if "loaded_from" not in run]
    if trained:
        reached = ", ".join(f"{run['length_schedule'][-1][1]:,}" for run in trained)
        steps = ", ".join(f"{run['steps']:,} ({run['stopped']})" for run in trained)
        models = (f"trained {steps} steps per seed on {c['min_train_length']:,}-{c['train_length']:,} bases "
                  f"(longest reached: {reached})")
    else:
        models = f"models loaded from {Path(record['training'][0]['loaded_from']).parent}"
    filters = "; dt filter columns: accuracy with the filter at each quantile" if c["dt_filter"] else ""
    lines = [f"Long-range recall: key {c['key_length']} + value {c['value_length']} bases; {models}; "
             f"{len(c['seeds'])} seed(s) x "
             f"{c['examples']} sequences per row; mean ± sd over seeds{filters}",
             f"{'direction':<10}{'length':>11}  {'accuracy':>17}  {'exact match':>17}  "
             f"{'truncated context':>17}  {'chance':>6}"
             + "".join(f"  {'dt filter ' + format(q, 'g'):>17}" for q in c["dt_filter"])]
    for row in record["summary"]:
        lines.append(f"{row['direction']:<10}{row['length']:>11,}  {_mean_sd(row['accuracy']):>17}  "
                     f"{_mean_sd(row['exact_match']):>17}  {_mean_sd(row['truncated_accuracy']):>17}  "
                     f"{row['chance_accuracy']:>6.4f}"
                     + "".join(f"  {_mean_sd(row[filtered_key(q, 'accuracy')]):>17}" for q in c["dt_filter"]))
    lines.append("longest memory horizon (bases) per seed, layer and scan direction: "
                 + "; ".join(f"seed {run['seed']}: " + ", ".join(
                     f"{h['layer']}{h['direction'][0]} {h['longest']:,.0f}" for h in run["memory_horizons"])
                             for run in record["training"]))
    return "\n".join(lines)


def heldout_table(record: dict) -> str:
    g, b, c = record["genome"], record["baselines"], record["config"]
    lines = [f"Held-out masked-base prediction: {g['heldout_bases']:,} held-out bases (split {g['split']}), "
             f"{g['scored_bases']:,} scored, each masked once (stride {c['stride']})",
             f"{'method':<34}{'window':>11}{'train bases':>15}{'bits/base':>11}{'accuracy':>10}"]
    gc, markov = b["gc_content"], b["markov"]
    lines.append(f"{'GC content only (GC ' + format(gc['gc_fraction'], '.1%') + ')':<34}{'-':>11}{'-':>15}"
                 f"{gc['bits_per_base']:>11.4f}{gc['accuracy']:>10.4f}")
    lines.append(f"{'Markov order ' + str(markov['order']) + ', beta ' + format(markov['beta'], 'g'):<34}{'-':>11}"
                 f"{'-':>15}{markov['bits_per_base']:>11.4f}{markov['accuracy']:>10.4f}")
    for m in record["models"]:
        name = f"GenoSSM d{c['d_model']} x {c['n_layer']} layers"
        lines.append(f"{name:<34}{m['window']:>11,}{m['training_bases']:>15,}{m['bits_per_base']:>11.4f}"
                     f"{m['accuracy']:>10.4f}")
    return "\n".join(lines)


def _mean_sd(stat: dict) -> str:
    return f"{stat['mean']:.4f} ± {stat['sd']:.4f}"
