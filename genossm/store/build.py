"""``build_store``: input files (FASTA/GenBank genomes or BAM/CRAM/SAM reads) -> token store.
The library function behind ``genossm preprocess``."""

import hashlib
import os
import sys
from pathlib import Path

from genossm.errors import GenossmError
from genossm.io.bam import ReadOptions, ReadStats, contig_lengths, iter_read_batches, open_alignments
from genossm.io.bed import parse_region, read_bed
from genossm.io.fasta import iter_fasta
from genossm.io.files import FORMATS, GENOME_FORMATS, detect_format, open_input, sha256_file
from genossm.io.genbank import read_genbank
from genossm.store.token_store import TokenStore
from genossm.store.writer import GenomeWriter, ReadsWriter, check_heldout, check_output, write_manifest
from genossm.utils.atomic import atomic_output

TOPOLOGIES = ("auto", "linear", "circular")


def build_store(
    inputs,
    out,
    *,
    format: str = "auto",
    topology: str = "auto",
    topology_by_name: dict | None = None,
    min_mapq: int = 0,
    include_secondary: bool = False,
    include_supplementary: bool = False,
    include_duplicates: bool = False,
    include_qcfail: bool = False,
    include_unmapped: bool = True,
    min_base_quality: int = 0,
    orientation: str = "original",
    regions=(),
    regions_bed=None,
    reference=None,
    holdout_fraction: float | None = None,
    holdout_bed=None,
    holdout_split: str = "val",
    progress: bool = True,
) -> TokenStore:
    """Preprocess ``inputs`` into the token store ``out`` and return it opened.

    Genomes (FASTA plain/gzip/bgzip, GenBank): one array per contig, names in input order.
    ``topology``: "auto" (from the FASTA header or GenBank LOCUS line, else linear), "linear" or
    "circular" for every contig; ``topology_by_name`` ({name: "linear"|"circular"}) overrides it.
    Held-out regions (split ``holdout_split``, 0-based half-open, in the manifest): the last
    ``holdout_fraction`` of every contig (per contig, so every chromosome and plasmid is
    represented) and/or the regions of ``holdout_bed``. Training must skip every window that
    overlaps them, windows wrapping the origin of a circular contig included.

    Reads (BAM, CRAM with ``reference``, SAM, unaligned BAM): the filters and orientation of
    :class:`genossm.io.bam.ReadOptions`; ``regions`` ("chr:start-end" strings, 1-based
    inclusive) and ``regions_bed`` (BED file) restrict to reads overlapping them.
    """
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    regions = [regions] if isinstance(regions, str) else list(regions)
    if not inputs:
        raise GenossmError("no input files")
    if format != "auto" and format not in FORMATS:
        raise GenossmError(f"unknown format {format!r} (choose from auto, {', '.join(FORMATS)})")
    if topology not in TOPOLOGIES:
        raise GenossmError(f"topology must be one of {', '.join(TOPOLOGIES)}, got {topology!r}")
    for path in inputs:
        if Path(out).resolve() == path.resolve():
            raise GenossmError("output would overwrite an input", path=path)
    check_output(out)
    formats = [_input_format(path, format) for path in inputs]
    genome = formats[0] in GENOME_FORMATS
    if any((fmt in GENOME_FORMATS) != genome for fmt in formats):
        raise GenossmError("cannot mix genome (FASTA/GenBank) and read (BAM/CRAM/SAM) inputs in one store")
    read_options = ReadOptions(
        min_mapq, include_secondary, include_supplementary, include_duplicates, include_qcfail,
        include_unmapped, min_base_quality, orientation,
    )
    for extra in (reference, regions_bed, holdout_bed):
        if extra is not None:
            open_input(extra).close()
    if genome:
        if read_options != ReadOptions() or regions or regions_bed is not None:
            raise GenossmError("read filters and regions apply only to BAM/CRAM/SAM input")
        if holdout_fraction is not None and not 0 < holdout_fraction < 1:
            raise GenossmError(f"holdout fraction must be in (0, 1), got {holdout_fraction}")
        options = {"topology": topology, "topology_by_name": dict(topology_by_name or {}),
                   "holdout_fraction": holdout_fraction, "holdout_bed": _name(holdout_bed),
                   "holdout_split": holdout_split}
    else:
        if topology != "auto" or topology_by_name:
            raise GenossmError("topology applies to genome (FASTA/GenBank) input; reads are linear")
        if holdout_fraction is not None or holdout_bed is not None:
            raise GenossmError("held-out regions apply to genome stores; hold out read files instead")
        options = {**vars(read_options), "regions": regions, "regions_bed": _name(regions_bed),
                   "reference": _name(reference)}
    with atomic_output(out, directory=True) as tmp:
        if genome:
            _build_genome(tmp, inputs, formats, options, progress, topology, topology_by_name,
                          holdout_fraction, holdout_bed, holdout_split)
        else:
            _build_reads(tmp, inputs, formats, options, progress, read_options, regions, regions_bed, reference)
    return TokenStore.open(out)


def _input_format(path, fmt):
    with open_input(path) as handle:
        if not handle.read(1):
            raise GenossmError("empty file", path=path)
    return detect_format(path) if fmt == "auto" else fmt


def _name(path):
    return None if path is None else str(path)


def _progress_bar(total, unit, enabled):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, delay=2.0, disable=not enabled,
                desc="preprocess", leave=False)


def _build_genome(tmp, inputs, formats, options, progress, topology, topology_by_name,
                  holdout_fraction, holdout_bed, holdout_split):
    writer = GenomeWriter(tmp)
    overrides = dict(topology_by_name or {})
    sources = []
    total = sum(path.stat().st_size for path in inputs)
    with _progress_bar(total, "B", progress) as bar:
        for source, (path, fmt) in enumerate(zip(inputs, formats)):
            if fmt == "fasta":
                hasher = hashlib.sha256()
                for record, chunks in iter_fasta(path, hasher=hasher, progress=bar):
                    writer.add(record.name, chunks, _topology(record, topology, overrides), source, skip_whitespace=True,
                               path=path, where=f"record {record.number} {record.name!r}")
                digest = hasher.hexdigest()
            else:
                for record, sequence in read_genbank(path):
                    writer.add(record.name, [sequence], _topology(record, topology, overrides), source, skip_whitespace=True,
                               path=path, where=f"record {record.number} {record.name!r}")
                digest = sha256_file(path)
                bar.update(path.stat().st_size)
            sources.append(_source(path, fmt, digest))
    unknown = set(overrides) - set(writer.lengths())
    if unknown:
        raise GenossmError(f"topology given for unknown contig {sorted(unknown)[0]!r}")
    heldout = []
    if holdout_fraction is not None:
        for name, length in writer.lengths().items():
            size = round(length * holdout_fraction)
            if size:
                heldout.append((name, length - size, length))
    if holdout_bed is not None:
        heldout += [(r.chrom, r.start, r.end) for r in read_bed(holdout_bed, writer.lengths()) if r.end > r.start]
    splits = {holdout_split: heldout} if heldout else {}
    write_manifest(tmp, writer.manifest(sources, options, check_heldout(splits, writer.lengths())))


def _topology(record, default, overrides):
    if record.name in overrides:
        return overrides.pop(record.name)
    return record.topology if default == "auto" else default


def _build_reads(tmp, inputs, formats, options, progress, read_options, regions, regions_bed, reference):
    writer = ReadsWriter(tmp)
    stats, sources = ReadStats(), []
    try:
        with _progress_bar(None, " reads", progress) as bar:
            for path, fmt in zip(inputs, formats):
                with open_alignments(path, fmt, reference) as alignments:
                    lengths = contig_lengths(alignments)
                    selected = None  # all reads
                    if regions or regions_bed is not None:
                        selected = [_region(text, lengths, path) for text in regions]
                        selected += read_bed(regions_bed, lengths) if regions_bed is not None else []
                    for batch in iter_read_batches(alignments, path, read_options, selected, stats, bar):
                        writer.add(batch)
                sources.append(_source(path, fmt, sha256_file(path)))
    finally:
        writer.close()
    if writer.count == 0:
        raise GenossmError(f"no reads passed the filters (of {stats.records} records)", path=inputs[0])
    stats_entry = {"records": stats.records, "kept": stats.kept, "dropped": stats.dropped,
                   "masked_bases": stats.masked_bases}
    write_manifest(tmp, writer.manifest(sources, options, stats_entry))


def _region(text, lengths, path):
    try:
        return parse_region(text, lengths)
    except GenossmError as err:
        raise GenossmError(err.problem, path=path, where=err.where) from None


def _source(path, fmt, digest) -> dict:
    return {"path": str(path.resolve()), "format": fmt, "size": path.stat().st_size, "sha256": digest}
