"""``genossm embed``: embeddings of BED regions or of variants' ref/alt haplotypes, as parquet."""

import click

from genossm.cli.predict import run_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", required=True, type=click.Path(exists=True),
              help="Model: a save_pretrained directory or a Lightning .ckpt.")
@click.option("-r", "--reference", required=True, type=click.Path(exists=True),
              help="Reference FASTA (plain, gzip or bgzip) or token store directory.")
@click.option("-b", "--bed", type=click.Path(exists=True, dir_okay=False),
              help="Regions (BED; strand in column 6: '-' regions are embedded as their reverse complement).")
@click.option("--variants", type=click.Path(exists=True, dir_okay=False),
              help="Instead of -b: a VCF/BCF; writes ref and alt embeddings around each ALT.")
@click.option("-o", "--output", required=True, help="OUT.parquet, or '-' for stdout.")
@click.option("--pool", type=click.Choice(["mean", "center", "none"]), default="mean", show_default=True,
              help="Per region: mean over its bases, its centre base, or none (one row per base, long format).")
@click.option("--layer", default=-1, show_default=True, help="Hidden state: 0 = embedding layer, -1 = last block.")
@click.option("--context", type=click.IntRange(min=1),
              help="Window length around each region [the region alone; regions batch together only when "
                   "their windows have one length] or variant [model's context_length].")
@click.option("--skip-unknown-contigs", is_flag=True,
              help="With --variants: keep going when VCF contigs are missing from the reference.")
@run_options
def embed(model, reference, bed, variants, output, pool, layer, context, skip_unknown_contigs,
          device, devices, precision, batch_size, threads, compile, max_window, progress):
    """Write MODEL embeddings of BED regions (one row per region: chrom, start, end, name,
    emb_0..emb_{d-1}; forward and reverse-complement strands averaged) or, with --variants, of
    the ref and alt haplotypes around each ALT, to parquet (pandas.read_parquet reads it)."""
    from genossm.cli.predict import log_to_stderr
    from genossm.embed import embed as run_embed
    from genossm.errors import GenossmError

    log_to_stderr("genossm embed")
    if threads:
        import torch

        torch.set_num_threads(threads)
    options = {"device": device, "devices": devices, "precision": precision, "batch_size": batch_size,
               "max_window": max_window, "progress": progress}
    if variants is not None:
        options.update(threads=threads, skip_unknown_contigs=skip_unknown_contigs)
    elif skip_unknown_contigs:
        raise GenossmError("--skip-unknown-contigs applies to --variants only (BED regions must be on the reference)")
    run_embed(model, reference, output, bed=bed, variants=variants, pool=pool, layer=layer, context=context,
              compile=compile, **options)
