"""``genossm evaluate``: the evaluation suite (long-range recall, held-out masked-base prediction).

Each subcommand writes one JSON record (-o; '-' for stdout) holding the command, the settings, the
genossm commit, the device, the start and end time and every number, and prints a table (on
stdout, or on stderr when the JSON goes to stdout). ``--smoke`` swaps in tiny sizes for a CPU check
of the whole pipeline; options given explicitly still win.
"""

import dataclasses
import shlex
import time
from pathlib import Path

import click
from click.core import ParameterSource


class NumberList(click.ParamType):
    """Comma-separated numbers: 1024,16384,131072 (int, or the type given)."""

    name = "N,..."

    def __init__(self, cast=int):
        self.cast = cast

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.cast(v.replace("_", "")) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"expected comma-separated numbers, got {value!r}", param, ctx)


def common_options(function):
    options = [
        click.option("-o", "--output", required=True, help="JSON result file, or '-' for stdout."),
        click.option("--smoke", is_flag=True,
                     help="Tiny sizes for a quick CPU check of the pipeline (its numbers measure nothing)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="auto: the first CUDA device when there is one (pick it with CUDA_VISIBLE_DEVICES)."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
                     help="Training and scoring precision (auto: bf16 on GPU, fp32 on CPU)."),
        click.option("--threads", default=0, type=click.IntRange(min=0), help="CPU threads for torch [torch default]."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def evaluate():
    """Evaluation suite: each subcommand trains what it needs, runs its baselines in the same run,
    writes a JSON record and prints a table."""


@evaluate.command()
@common_options
@click.option("--seeds", type=NumberList(), help="One training run per seed [0,1,2].")
@click.option("--lengths", type=NumberList(), help="Evaluation sequence lengths [8192,65536,1048576,4194304].")
@click.option("--directions", type=click.Choice(["both", "forward", "mirror"]), default="both", show_default=True,
              help="forward: pair early, query late; mirror: the same read backwards.")
@click.option("--key-length", type=click.IntRange(min=1), help="Key k-mer length, 16..31 [16].")
@click.option("--value-length", type=click.IntRange(min=1), help="Value k-mer length [8].")
@click.option("--train-length", type=click.IntRange(min=1), help="Longest training sequence [8192].")
@click.option("--min-train-length", type=click.IntRange(min=1),
              help="Shortest training sequence, and the curriculum's first longest one [64].")
@click.option("--curriculum/--no-curriculum", default=None,
              help="Start training on the shortest sequences and double the longest training length each "
                   "time the loss of the last --advance-window steps averages below --advance-loss [on].")
@click.option("--advance-loss", type=click.FloatRange(min=0, min_open=True), help="Curriculum threshold, nats [0.2].")
@click.option("--advance-window", type=click.IntRange(min=1), help="Curriculum window, steps [100].")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps per seed, the length of the lr schedule "
                                                           "[15000].")
@click.option("--distractors", type=click.IntRange(min=0),
              help="Near-misses of the key (1-2 bases changed) planted per training sequence [0].")
@click.option("--stop-loss", type=click.FloatRange(min=0),
              help="Stop a seed's training early once the curriculum is done and the last --advance-window "
                   "steps average below this many nats; 0: never [0.005].")
@click.option("--max-train-seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop a seed's training after this many seconds (the record says where) [no limit].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Training sequences per step [32].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate [3e-3].")
@click.option("--warmup-steps", type=click.IntRange(min=0), help="Linear warmup steps [200].")
@click.option("--d-model", type=click.IntRange(min=1), help="Model width [64].")
@click.option("--n-layer", type=click.IntRange(min=1), help="Model depth [2].")
@click.option("--dt-min", type=click.FloatRange(min=0, min_open=True),
              help="The model's smallest initial dt; its channels' initial memory horizons reach 1/dt-min bases "
                   "[0.001].")
@click.option("--examples", type=click.IntRange(min=1), help="Evaluation sequences per seed, direction, length [64].")
@click.option("--dt-filter", type=NumberList(float),
              help="Comma-separated quantiles: also evaluate the same sequences with the inference-time dt filter "
                   "at each (genossm.model.dt_filter: long-memory channels skip the positions where their dt is "
                   "below that quantile) [off].")
@click.option("--neighbourhood", type=click.IntRange(min=1),
              help="Truncated-context baseline: bases kept on each side of the masked value [1024].")
@click.option("--tokens-per-batch", type=click.IntRange(min=1),
              help="Evaluation tokens per forward pass [4M GPU, 32k CPU].")
@click.option("--save-models", type=click.Path(file_okay=False),
              help="Directory to save each seed's trained model in (seed<N>/, as genossm train exports).")
@click.option("--load-models", type=click.Path(exists=True, file_okay=False),
              help="Evaluate the models a --save-models run saved here (seed<N>/) instead of training; the "
                   "same seeds give the same evaluation sequences.")
def recall(output, smoke, device, precision, threads, progress, directions, save_models, load_models, **sizes):
    """Long-range recall: a key k-mer with a value planted early, the key again late with the value
    masked; train at <= 8 kb, evaluate at each length without retraining, for several seeds, against
    chance and the same model given only the query's neighbourhood."""
    from genossm.evaluate import RecallConfig, run_recall
    from genossm.evaluate.record import recall_table

    if directions != "both":
        sizes["directions"] = (directions,)
    preset = RecallConfig.smoke() if smoke else RecallConfig()
    config = dataclasses.replace(preset, **{k: v for k, v in sizes.items() if v is not None})
    _run("recall", lambda dev: run_recall(config, dev, precision, progress, save_models, load_models),
         recall_table, output, device, threads, smoke)


@evaluate.command()
@common_options
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-w", "--work-dir", type=click.Path(file_okay=False),
              help="Keep the built store and the training runs here (new or empty) [a temporary directory].")
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True,
              help="Held-out split: written for genome files, read from a token store.")
@click.option("--holdout-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Genome files: hold out this last fraction of every contig.")
@click.option("--topology", type=click.Choice(["auto", "linear", "circular"]), default="auto", show_default=True,
              help="Genome files: contig topology (auto: from the FASTA header / GenBank LOCUS).")
@click.option("--windows", type=NumberList(), help="Window lengths of the context ablation [1024,16384,131072,1048576].")
@click.option("--steps", type=click.IntRange(min=1),
              help="Optimizer steps per window length [70: ~10 min each for the reference model on one H100].")
@click.option("--batch-bases", type=click.IntRange(min=1),
              help="Bases per optimizer step, the same for every window (batch = this / window) [1048576].")
@click.option("--d-model", type=click.IntRange(min=1), help="Model width [256].")
@click.option("--n-layer", type=click.IntRange(min=1), help="Model depth [16].")
@click.option("--checkpointing/--no-checkpointing", default=None, help="Activation checkpointing [on].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate [2e-3].")
@click.option("--warmup-steps", type=click.IntRange(min=0), help="Linear warmup steps [10].")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of training and sampling [0].")
@click.option("--stride", type=click.IntRange(min=2), help="Distance between masked bases in one pass [16].")
@click.option("--eval-bases", type=click.IntRange(min=1),
              help="Score only this many held-out bases, in evenly spaced blocks [all].")
@click.option("--markov-max-order", type=click.IntRange(min=0), help="Highest Markov order tried [12].")
@click.option("--markov-betas", type=NumberList(float),
              help="Smoothing strengths (beta) tried [2,8,32,128,512,2048].")
@click.option("--num-workers", type=click.IntRange(min=0), help="Training data loader workers [4].")
@click.option("--tokens-per-batch", type=click.IntRange(min=1),
              help="Scoring tokens per forward pass [2M GPU, 32k CPU].")
def heldout(output, smoke, device, precision, threads, progress, inputs, work_dir, split, holdout_fraction, topology,
            **sizes):
    """Held-out masked-base prediction on INPUTS (FASTA/GenBank files of one genome, or one token
    store): train one model per window length on the training part under one budget, score every
    held-out base, and compare with GC content and the best k-mer Markov model in the same run."""
    from genossm.evaluate import HeldoutConfig, run_heldout
    from genossm.evaluate.record import heldout_table

    ctx = click.get_current_context()
    genome_only = [f"--{name.replace('_', '-')}" for name in ("holdout_fraction", "topology")
                   if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)]
    if genome_only and len(inputs) == 1 and Path(inputs[0]).is_dir():
        raise click.UsageError(f"{' and '.join(genome_only)}: only for genome files; the token store {inputs[0]} "
                               "keeps the split and topologies it was built with")
    preset = HeldoutConfig.smoke() if smoke else HeldoutConfig()
    config = dataclasses.replace(preset, **{k: v for k, v in sizes.items() if v is not None})
    _run("heldout", lambda dev: run_heldout(inputs, config, work_dir=work_dir, split=split,
                                            holdout_fraction=holdout_fraction, topology=topology, device=dev,
                                            precision=precision, progress=progress),
         heldout_table, output, device, threads, smoke)


def _run(name, evaluation, table, output, device, threads, smoke):
    """Run ``evaluation(device)``, wrap its result with provenance, write the JSON, print the table."""
    import torch

    from genossm.cli.predict import log_to_stderr
    from genossm.evaluate.record import provenance, utc_now, write_json
    from genossm.score.passes import resolve_device

    log_to_stderr(f"genossm evaluate {name}")
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    started, clock = utc_now(), time.perf_counter()
    result = evaluation(device)
    record = {"evaluation": name, "smoke": smoke, "command": command_line(click.get_current_context()),
              **provenance(device), "started": started, "finished": utc_now(),
              "elapsed_s": time.perf_counter() - clock, **result}
    write_json(record, output)
    click.echo(table(record), err=output == "-")


def command_line(ctx) -> str:
    """The command as given: ``genossm evaluate NAME`` and every parameter not left at its default."""
    words = ["genossm", "evaluate", ctx.info_name]
    arguments = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if ctx.get_parameter_source(param.name) in (None, ParameterSource.DEFAULT):
            continue
        if isinstance(param, click.Argument):
            arguments += [str(v) for v in value]
        elif param.is_flag:
            words.append(param.opts[-1] if value else param.secondary_opts[-1])
        else:
            words += [param.opts[-1], ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return shlex.join(words + arguments)

