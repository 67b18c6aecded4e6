"""``genossm preprocess``: FASTA/GenBank genomes or BAM/CRAM/SAM reads -> token store."""

import click

from genossm.errors import GenossmError


def _parse_topology(values):
    default, by_name = "auto", {}
    for value in values:
        name, eq, mode = value.rpartition("=")
        if eq and mode in ("linear", "circular") and name:
            by_name[name] = mode
        elif not eq and value in ("auto", "linear", "circular"):
            default = value
        else:
            raise GenossmError(f"--topology takes auto, linear, circular or NAME=linear|circular, got {value!r}")
    return default, by_name


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", required=True, metavar="STORE", help="Output store directory (an existing store there is replaced).")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "fasta", "genbank", "bam", "cram", "sam"]),
              help="Input format; auto tells them apart by content.")
@click.option("--topology", multiple=True, metavar="MODE|NAME=MODE",
              help="auto (from FASTA header words or the GenBank LOCUS line), linear or circular for all "
                   "contigs, or NAME=linear|circular for one; repeatable. Default: auto.")
@click.option("--min-mapq", type=click.IntRange(0), default=0, show_default=True,
              help="Reads: drop records with MAPQ below this (unmapped records have MAPQ 0).")
@click.option("--include-secondary", is_flag=True, help="Reads: keep secondary alignments (0x100).")
@click.option("--include-supplementary", is_flag=True, help="Reads: keep supplementary alignments (0x800).")
@click.option("--include-duplicates", is_flag=True, help="Reads: keep PCR/optical duplicates (0x400).")
@click.option("--include-qcfail", is_flag=True, help="Reads: keep QC-failed reads (0x200).")
@click.option("--exclude-unmapped", is_flag=True, help="Reads: drop unmapped records (0x4).")
@click.option("--min-base-quality", type=click.IntRange(0), default=0, show_default=True,
              help="Reads: write bases with a lower Phred quality as N.")
@click.option("--orientation", type=click.Choice(["original", "reference"]), default="original", show_default=True,
              help="Reads: original sequencing orientation (reverse-strand reads reverse-complemented back) "
                   "or the reference-forward orientation of SAM.")
@click.option("--region", "regions", multiple=True, metavar="CHR:START-END",
              help="Reads: keep reads overlapping this region (1-based inclusive, like samtools; needs an index); repeatable.")
@click.option("--regions-bed", default=None, metavar="BED", help="Reads: keep reads overlapping the regions of this BED file.")
@click.option("--reference", default=None, metavar="FASTA", help="Reference FASTA for CRAM input.")
@click.option("--holdout-fraction", type=float, default=None, metavar="FRACTION",
              help="Genomes: hold out the last FRACTION of every contig (e.g. 0.1); training must not see it.")
@click.option("--holdout-bed", default=None, metavar="BED", help="Genomes: hold out the regions of this BED file.")
@click.option("--holdout-split", default="val", show_default=True, help="Split name for the held-out regions.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary on stderr.")
def preprocess(inputs, out, fmt, topology, min_mapq, include_secondary, include_supplementary, include_duplicates,
               include_qcfail, exclude_unmapped, min_base_quality, orientation, regions, regions_bed, reference,
               holdout_fraction, holdout_bed, holdout_split, quiet):
    """Tokenize INPUTS (FASTA plain/gzip/bgzip, GenBank, BAM, CRAM, SAM) into the token store STORE.

    Genome inputs give one memory-mapped array per contig; read inputs give one concatenated array
    of reads. The store format is documented in genossm.store.
    """
    from genossm.store import build_store

    default_topology, topology_by_name = _parse_topology(topology)
    store = build_store(
        list(inputs), out, format=fmt, topology=default_topology, topology_by_name=topology_by_name,
        min_mapq=min_mapq, include_secondary=include_secondary, include_supplementary=include_supplementary,
        include_duplicates=include_duplicates, include_qcfail=include_qcfail, include_unmapped=not exclude_unmapped,
        min_base_quality=min_base_quality, orientation=orientation, regions=regions, regions_bed=regions_bed,
        reference=reference, holdout_fraction=holdout_fraction, holdout_bed=holdout_bed,
        holdout_split=holdout_split, progress=not quiet,
    )
    if not quiet:
        manifest = store.manifest
        what = f"{len(store)} reads" if store.is_reads else f"{len(store)} contigs"
        heldout = sum(e - s for regions_ in manifest["heldout"].values() for _, s, e in regions_)
        click.echo(
            f"wrote {out}: {what}, {manifest['length']:,} bases, N fraction {manifest['n_fraction']:.4f}"
            + (f", {heldout:,} held-out bases" if heldout else ""),
            err=True,
        )
