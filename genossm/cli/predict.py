"""``genossm predict``: variant-effect scores for every ALT of a VCF/BCF (see genossm.score)."""

import logging
import os

import click


def log_to_stderr(prefix: str):
    """genossm's log messages on stderr; DDP ranks other than the first stay quiet."""
    handler = logging.StreamHandler()  # the current sys.stderr
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    handler.genossm_cli = True
    logger = logging.getLogger("genossm")
    logger.handlers = [h for h in logger.handlers if not getattr(h, "genossm_cli", False)] + [handler]
    logger.setLevel(logging.INFO if os.environ.get("LOCAL_RANK", "0") == "0" else logging.ERROR)


def run_options(function):
    """Options shared by predict and embed: where and how the forward passes run."""
    options = [
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--devices", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Number of devices (GPUs): > 1 runs Lightning DDP, one process per device."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
                     help="Forward passes under bf16 autocast or in fp32 (auto: bf16 on GPU, fp32 on CPU)."),
        click.option("--batch-size", type=click.IntRange(min=1),
                     help="Windows per forward pass [~1M tokens on GPU, 64k on CPU]."),
        click.option("--threads", default=0, type=click.IntRange(min=0),
                     help="CPU threads for torch and VCF/BCF (de)compression [torch default]."),
        click.option("--compile/--no-compile", default=False, show_default=True,
                     help="torch.compile the model's blocks: about a minute per window length, then about 2x faster "
                          "on a GPU (pays off on long runs)."),
        click.option("--max-window", default=1 << 20, show_default=True, type=click.IntRange(min=1),
                     help="Longer windows (--context, or a long region) run chunk by chunk, layer by layer, in "
                          "chunks of this many bases: device memory flat, host memory window x d_model."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", required=True, type=click.Path(exists=True),
              help="Model: a save_pretrained directory or a Lightning .ckpt.")
@click.option("-r", "--reference", required=True, type=click.Path(exists=True),
              help="Reference FASTA (plain, gzip or bgzip) or token store directory.")
@click.option("-v", "--vcf", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Variants: VCF, VCF.gz (bgzip) or BCF.")
@click.option("-o", "--output", required=True,
              help="OUT.vcf, OUT.vcf.gz, OUT.bcf, OUT.tsv or OUT.parquet; '-' writes to stdout.")
@click.option("-O", "--output-format", type=click.Choice(["vcf", "vcf.gz", "bcf", "tsv", "parquet"]),
              help="Output format when the name does not say it (default for '-': vcf).")
@click.option("--context", type=click.IntRange(min=1),
              help="Window length in bases around each variant [model's context_length].")
@click.option("--embedding-distance", is_flag=True,
              help="Also score the cosine distance of ref vs alt embeddings (2 more passes per strand and ALT).")
@click.option("--skip-unknown-contigs", is_flag=True,
              help="Score the rest when VCF contigs are missing from the reference (status unknown_contig).")
@run_options
def predict(model, reference, vcf, output, output_format, context, embedding_distance, skip_unknown_contigs,
            device, devices, precision, batch_size, threads, compile, max_window, progress):
    """Score every ALT allele of VCF with MODEL against REFERENCE.

    Scores: llr (log-likelihood ratio alt vs ref, masked-marginal for SNVs, masked-span
    haplotype difference for indels/MNVs, forward/reverse-complement average) and, with
    --embedding-distance, cosine_distance. Each ALT gets a status (ok, ref_mismatch,
    unknown_contig, symbolic, ...) counted on stderr. Output keeps the input order; VCF output
    keeps every record and adds INFO/GENOSSM_* fields, one value per ALT (a record without ALT,
    '.', has nothing to score and keeps no GENOSSM field; TSV and parquet give it a row with
    status no_alt).
    """
    from genossm.score import DEFAULT_SCORES, predict as run_predict

    log_to_stderr("genossm predict")
    if threads:
        import torch

        torch.set_num_threads(threads)
    scores = DEFAULT_SCORES + (("cosine_distance",) if embedding_distance else ())
    run_predict(model, reference, vcf, output, fmt=output_format, scores=scores, context=context,
                skip_unknown_contigs=skip_unknown_contigs, threads=threads, device=device, devices=devices,
                precision=precision, batch_size=batch_size, compile=compile, max_window=max_window,
                progress=progress)
