"""Sequencing reads from BAM, CRAM, SAM or unaligned BAM (pysam), tokenized in batches.

Filters (:class:`ReadOptions`): secondary (flag 0x100), supplementary (0x800), duplicate (0x400)
and QC-fail (0x200) records are dropped by default; ``min_mapq`` drops records with MAPQ below it
(unmapped records have MAPQ 0, as with ``samtools view -q``); ``include_unmapped=False`` drops
unmapped records. Records without a stored sequence (SEQ ``*``) are skipped. Every dropped record
is counted under its first reason in :class:`ReadStats`.

Regions (0-based half-open ``BedRegion``s; None means the whole file) select reads overlapping
any of them and need an index (.bai/.csi/.crai); overlapping regions are merged and a read
spanning several regions comes once.

Bases with quality below ``min_base_quality`` become N. Orientation: ``"original"`` (default)
reverse-complements reverse-strand records (flag 0x10) back to the order the sequencer read them;
``"reference"`` keeps SAM's forward-strand orientation.

Names: ``qname/1`` and ``qname/2`` for the first and last segment of a paired template, ``qname``
otherwise; an included secondary or supplementary record gets ``@secondary:CONTIG:POS`` or
``@supplementary:CONTIG:POS`` appended (POS 1-based), so stored names stay unique.
"""

import contextlib
from dataclasses import dataclass, field

import numpy as np

from genossm.errors import GenossmError
from genossm.tokenize import COMPLEMENT, N, encode

_UNMAPPED, _REVERSE, _PAIRED, _READ1, _READ2 = 0x4, 0x10, 0x1, 0x40, 0x80
_SECONDARY, _QCFAIL, _DUPLICATE, _SUPPLEMENTARY = 0x100, 0x200, 0x400, 0x800
_BATCH_READS = 1 << 16
_BATCH_BASES = 1 << 24
_MODES = {"bam": "rb", "cram": "rc", "sam": "r"}


@dataclass
class ReadOptions:
    min_mapq: int = 0
    include_secondary: bool = False
    include_supplementary: bool = False
    include_duplicates: bool = False
    include_qcfail: bool = False
    include_unmapped: bool = True
    min_base_quality: int = 0
    orientation: str = "original"  # or "reference"

    def __post_init__(self):
        if self.orientation not in ("original", "reference"):
            raise GenossmError(f"orientation must be 'original' or 'reference', got {self.orientation!r}")
        if self.min_mapq < 0 or self.min_base_quality < 0:
            raise GenossmError("min_mapq and min_base_quality must be >= 0")


@dataclass
class ReadStats:
    records: int = 0  # records seen
    kept: int = 0
    dropped: dict = field(default_factory=dict)  # reason -> count
    masked_bases: int = 0  # bases set to N by min_base_quality


@dataclass
class ReadBatch:
    names: list
    ids: np.ndarray  # (total bases,) uint8, reads concatenated
    lengths: np.ndarray  # (reads,) int64


@contextlib.contextmanager
def open_alignments(path, fmt: str, reference=None):
    """Open a BAM/CRAM/SAM (aligned or not) with pysam; CRAM needs ``reference``. A context
    manager: htslib stays quiet while the file is read (errors are ours, one line each), and a
    damaged file's failure to close does not replace the error that reading it raised."""
    import pysam

    if fmt == "cram" and reference is None:
        raise GenossmError("CRAM input needs --reference (the FASTA it was compressed against)", path=path)
    verbosity = pysam.set_verbosity(0)  # also silences "could not load index": regions check it
    try:
        try:
            alignments = pysam.AlignmentFile(
                str(path), _MODES[fmt], check_sq=False,
                reference_filename=None if reference is None else str(reference))
        except (OSError, ValueError) as err:
            raise GenossmError(f"cannot open as {fmt.upper()}: {err}", path=path) from None
        try:
            yield alignments
        finally:
            with contextlib.suppress(OSError):
                alignments.close()
    finally:
        pysam.set_verbosity(verbosity)


def contig_lengths(alignments) -> dict:
    return dict(zip(alignments.references, alignments.lengths))


def iter_read_batches(alignments, path, options: ReadOptions, regions=None, stats=None, progress=None):
    """Yield :class:`ReadBatch` es of the kept reads of an open AlignmentFile, in file (or region)
    order. ``stats`` (ReadStats) is updated in place; ``progress`` (tqdm) advances per record."""
    stats = ReadStats() if stats is None else stats
    drop = (
        (_UNMAPPED * (not options.include_unmapped), "unmapped"),
        (_SECONDARY * (not options.include_secondary), "secondary"),
        (_SUPPLEMENTARY * (not options.include_supplementary), "supplementary"),
        (_DUPLICATE * (not options.include_duplicates), "duplicate"),
        (_QCFAIL * (not options.include_qcfail), "qcfail"),
    )
    drop_mask = sum(bit for bit, _ in drop)
    names, seqs, quals, reverse, bases = [], [], [], [], 0
    for record in _records(alignments, path, regions, stats):
        stats.records += 1
        flag = record.flag
        reason = None
        if flag & drop_mask:
            reason = next(name for bit, name in drop if flag & bit)
        elif record.mapping_quality < options.min_mapq:
            reason = "low_mapq"
        else:
            seq = record.query_sequence
            if not seq:
                reason = "no_sequence"
        if reason is not None:
            stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
            continue
        names.append(_read_name(record, flag))
        seqs.append(seq)
        if options.min_base_quality:
            qual = record.query_qualities
            quals.append(b"\xff" * len(seq) if qual is None else qual.tobytes())
        reverse.append(bool(flag & _REVERSE))
        bases += len(seq)
        if len(names) >= _BATCH_READS or bases >= _BATCH_BASES:
            yield _batch(names, seqs, quals, reverse, options, stats, path)
            if progress is not None:
                progress.update(len(names))
            names, seqs, quals, reverse, bases = [], [], [], [], 0
    if names:
        yield _batch(names, seqs, quals, reverse, options, stats, path)
        if progress is not None:
            progress.update(len(names))


def _records(alignments, path, regions, stats):
    try:
        if regions is None:
            yield from alignments.fetch(until_eof=True)
            return
        if not alignments.has_index():
            raise GenossmError(
                "region query needs an index (.bai/.csi/.crai) next to the file: run `samtools index`", path=path
            )
        previous_chrom, previous_end = None, 0
        for chrom, start, end in _merge(regions, alignments.references):
            for record in alignments.fetch(chrom, start, end):
                # Regions are merged and sorted: starting before the previous region's end means
                # the read overlapped it and was already returned.
                if chrom == previous_chrom and record.reference_start < previous_end:
                    continue
                yield record
            previous_chrom, previous_end = chrom, end
    except OSError as err:
        hint = " (or a --reference other than the one it was compressed against)" if alignments.is_cram else ""
        raise GenossmError(f"cannot read alignments: {err}{hint}", path=path,
                           where=f"record {stats.records + 1}") from None


def _merge(regions, contig_order):
    rank = {name: i for i, name in enumerate(contig_order)}
    merged = []
    for region in sorted(regions, key=lambda r: (rank.get(r.chrom, len(rank)), r.start, r.end)):
        if merged and merged[-1][0] == region.chrom and region.start <= merged[-1][2]:
            merged[-1][2] = max(merged[-1][2], region.end)
        else:
            merged.append([region.chrom, region.start, region.end])
    return merged


def _read_name(record, flag) -> str:
    name = record.query_name
    if flag & _PAIRED and (flag & (_READ1 | _READ2)) in (_READ1, _READ2):
        name = f"{name}/1" if flag & _READ1 else f"{name}/2"
    if flag & (_SECONDARY | _SUPPLEMENTARY):
        kind = "secondary" if flag & _SECONDARY else "supplementary"
        name = f"{name}@{kind}:{record.reference_name}:{record.reference_start + 1}"
    return name


def _batch(names, seqs, quals, reverse, options, stats, path) -> ReadBatch:
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    try:
        ids = encode("".join(seqs))
    except GenossmError:
        for name, seq in zip(names, seqs):
            try:
                encode(seq)
            except GenossmError as err:
                raise GenossmError(err.problem, path=path, where=f"read {name!r}") from None
        raise
    if options.min_base_quality:
        low = np.frombuffer(b"".join(quals), dtype=np.uint8) < options.min_base_quality
        ids[low] = N
        stats.masked_bases += int(np.count_nonzero(low))
    reverse = np.asarray(reverse, dtype=bool)
    if options.orientation == "original" and reverse.any():
        # Reverse-complement the reverse-strand reads in place: one gather over the whole batch.
        ends = np.cumsum(lengths)
        flip = np.repeat(reverse, lengths)
        position = np.arange(ids.size, dtype=np.int64)
        mirrored = np.repeat(2 * ends - lengths - 1, lengths) - position  # start + end - 1 - i
        ids = ids[np.where(flip, mirrored, position)]
        ids[flip] = COMPLEMENT[ids[flip]]
    stats.kept += len(names)
    return ReadBatch(names, ids, lengths)
