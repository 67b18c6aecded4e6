"""VCF/BCF input and annotated output, over pysam (imported lazily).

Coordinates: ``pos`` is the VCF POS, 1-based, exactly as written in the file; REF and ALT are kept
as written (normalization for scoring happens in :mod:`genossm.score` and never changes what is
reported). One table row per ALT allele, in file order; a record without ALT (``.``) gets one row
with ``alt = "."`` so that nothing is dropped silently.
"""

import contextlib
import gzip
import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from genossm.errors import GenossmError
from genossm.utils.atomic import atomic_output

log = logging.getLogger(__name__)

VCF_FORMATS = ("vcf", "vcf.gz", "bcf")

# Names that mean the same contig across naming styles (UCSC chrM vs Ensembl MT).
_ALIASES = {"M": "MT", "MT": "M"}


@dataclass
class VcfVariants:
    """What :func:`read_variants` returns: a per-ALT table plus what the header says about contigs."""

    path: str
    table: pd.DataFrame  # chrom, pos (1-based), id (None if '.'), ref, alt; one row per ALT
    header_contigs: dict = field(default_factory=dict)  # name -> length (None if not given)
    n_records: int = 0


@contextlib.contextmanager
def _htslib_quiet():
    """Silence htslib's own stderr messages: we raise one clear error instead."""
    import pysam

    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


def _open_raw(path, mode="rb"):
    """Open a plain or (b)gzip-compressed file."""
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, mode) if gzipped else open(path, mode)


def _first_line(path) -> bytes:
    try:
        with _open_raw(path) as fh:
            return fh.readline(200)
    except (OSError, EOFError) as err:
        raise GenossmError(f"cannot read ({err})", path=path) from None


def open_vcf(path, threads: int = 0):
    """Open a VCF/VCF.gz/BCF for reading as a ``pysam.VariantFile``; bad input is one clear error."""
    import pysam

    path = str(path)
    try:
        with _htslib_quiet():
            return pysam.VariantFile(path, "r", threads=threads)
    except FileNotFoundError:
        raise GenossmError("file not found", path=path) from None
    except (ValueError, OSError, NotImplementedError):
        pass  # find out what is wrong below
    first = _first_line(path)
    if first.startswith(b"BCF"):
        raise GenossmError("unreadable or truncated BCF file", path=path)
    if not first.startswith(b"##fileformat=VCF"):
        shown = first.decode("ascii", "replace").rstrip("\n").replace("\t", "\\t")[:60]
        raise GenossmError(
            f"no VCF header: the first line must be '##fileformat=VCFv4.x' followed by '##' meta "
            f"lines and a '#CHROM' line, found \"{shown}\"",
            path=path,
        )
    if _is_plain_gzip(path):
        raise GenossmError("compressed with plain gzip: VCF.gz must be bgzip-compressed (bgzip, bcftools view -Oz)",
                           path=path)
    raise GenossmError("not a readable VCF/BCF file (malformed header)", path=path)


def _is_plain_gzip(path) -> bool:
    """gzip without the BGZF 'BC' extra field."""
    with open(path, "rb") as fh:
        head = fh.read(18)
    return head[:2] == b"\x1f\x8b" and not (head[3] & 4 and head[12:14] == b"BC")


def _record_line(path, index: int):
    """Line number and text of the ``index``-th (0-based) data record of a text VCF, else None."""
    with contextlib.suppress(OSError, EOFError, UnicodeDecodeError):
        if _first_line(path).startswith(b"BCF"):
            return None
        with _open_raw(path, "rt") as fh:
            records = (item for item in enumerate(fh, start=1) if not item[1].startswith("#"))
            for seen, (number, line) in enumerate(records):
                if seen == index:
                    return number, line.rstrip("\n")
    return None


def _parse_error(path, index: int, previous) -> GenossmError:
    located = _record_line(path, index)
    if located is not None:
        number, text = located
        shown = text.replace("\t", "\\t")[:80]
        return GenossmError(f"cannot parse VCF record \"{shown}\"", path=path, where=f"line {number}")
    after = f" (after {previous[0]}:{previous[1]})" if previous else ""
    return GenossmError(f"cannot parse record {index + 1}{after}", path=path)


def _iter_records(vcf, path):
    """The records of an open VariantFile in file order; one that htslib cannot parse raises a
    GenossmError naming its line (htslib's own messages silenced)."""
    records, index, previous = iter(vcf), 0, None
    while True:
        with _htslib_quiet():
            try:
                rec = next(records)
            except StopIteration:
                return
            except (OSError, ValueError):
                raise _parse_error(path, index, previous) from None
        yield rec
        index, previous = index + 1, (rec.chrom, rec.pos)


def read_variants(path, threads: int = 0) -> VcfVariants:
    """Read every record of a VCF/BCF into a per-ALT table (file order kept).

    Columns: ``chrom``, ``pos`` (VCF POS, 1-based), ``id`` (None for '.'), ``ref``, ``alt``
    (``"."`` for a record without ALT). Multi-allelic records give one row per ALT.
    """
    path = str(path)
    chroms, positions, ids, refs, alts = [], [], [], [], []
    n_records = 0
    with open_vcf(path, threads=threads) as vcf:
        header_contigs = {name: contig.length for name, contig in vcf.header.contigs.items()}
        for rec in _iter_records(vcf, path):
            chrom, pos = rec.chrom, rec.pos
            for alt in rec.alts or (".",):
                chroms.append(chrom)
                positions.append(pos)
                ids.append(rec.id)
                refs.append(rec.ref)
                alts.append(alt)
            n_records += 1
    table = pd.DataFrame(
        {
            "chrom": pd.Series(chroms, dtype=object),
            "pos": np.asarray(positions, dtype=np.int64),
            "id": pd.Series(ids, dtype=object),
            "ref": pd.Series(refs, dtype=object),
            "alt": pd.Series(alts, dtype=object),
        }
    )
    return VcfVariants(path=path, table=table, header_contigs=header_contigs, n_records=n_records)


def match_contigs(names, reference_names) -> dict:
    """Map each VCF contig name to a reference contig name, or None when there is no match.

    An exact name wins; otherwise ``chr1`` <-> ``1`` (and ``chrM`` <-> ``MT``) is matched when
    exactly one reference contig fits, so an ambiguous reference never gets a guessed name.
    """
    reference = set(reference_names)
    mapping = {}
    for name in dict.fromkeys(names):
        if name in reference:
            mapping[name] = name
            continue
        bare = name[3:] if name.lower().startswith("chr") else name
        candidates = {bare, "chr" + bare, "Chr" + bare, "CHR" + bare}
        if bare in _ALIASES:
            alias = _ALIASES[bare]
            candidates |= {alias, "chr" + alias}
        found = sorted(candidates & reference - {name})
        mapping[name] = found[0] if len(found) == 1 else None
    return mapping


def check_contig_lengths(header_contigs: dict, mapping: dict, lengths: dict, path=None) -> list:
    """Warn (on stderr, through logging) for header contig lengths that disagree with the reference.

    A disagreement is not an error: a wrong genome build shows up as REF mismatches per variant.
    Returns the warning messages.
    """
    messages = []
    for name, header_length in header_contigs.items():
        target = mapping.get(name)
        if header_length is None or target is None or target not in lengths:
            continue
        if int(header_length) != int(lengths[target]):
            messages.append(
                f"{path}: header says contig {name!r} has length {header_length}, the reference "
                f"{target!r} has {lengths[target]} (different genome build?)"
            )
    for message in messages:
        log.warning("warning: %s", message)
    return messages


@dataclass(frozen=True)
class InfoField:
    """One INFO field added to every record: ``Number=A`` (one value per ALT)."""

    key: str
    type: str  # "Float" | "String" | "Integer"
    description: str


def vcf_format_of(path) -> str | None:
    """'vcf', 'vcf.gz' or 'bcf' from a file name, else None."""
    name = str(path).lower()
    if name.endswith(".bcf"):
        return "bcf"
    if name.endswith((".vcf.gz", ".vcf.bgz")):
        return "vcf.gz"
    if name.endswith(".vcf"):
        return "vcf"
    return None


def _add_info_headers(header, fields, path):
    for info in fields:
        existing = header.info.get(info.key)
        if existing is not None:
            if existing.number != "A" or existing.type != info.type:
                raise GenossmError(
                    f"INFO/{info.key} is already defined with Number={existing.number},"
                    f"Type={existing.type}; remove it first (e.g. bcftools annotate -x INFO/{info.key})",
                    path=path,
                )
            continue
        header.info.add(info.key, "A", info.type, info.description)


def annotate_vcf(in_path, out_path, fields, values, fmt=None, meta=(), contigs=(), threads: int = 0):
    """Copy ``in_path`` to ``out_path`` record by record, adding Number=A INFO fields.

    ``values[key]`` is a sequence with one entry per row of :func:`read_variants`' table (one per
    ALT, in file order; a record without ALT consumes one row and gets no INFO); None or NaN
    writes '.'. Every input record and header line is kept; ``meta`` adds ``##key=value`` lines;
    ``contigs`` (the contigs the records use) get a ``##contig`` line in BCF output when the
    header lacks one, since BCF cannot encode an undeclared contig. Text VCF records are written
    as htslib formats them, unchanged apart from INFO. ``out_path`` '-' writes to stdout; file
    outputs are atomic. ``fmt`` ('vcf', 'vcf.gz', 'bcf') defaults from the file name.
    """
    fmt = fmt or vcf_format_of(out_path)
    if fmt not in VCF_FORMATS:
        raise GenossmError(f"unknown VCF output format {fmt!r}; use one of {', '.join(VCF_FORMATS)}", path=out_path)
    in_path = str(in_path)
    values = {key: list(column) for key, column in values.items()}
    undeclared = _tags_declared_while_parsing(in_path, threads)
    with open_vcf(in_path, threads=threads) as vcf:
        header = vcf.header  # edited in place so that records parsed from now on carry the new fields
        for line in undeclared:
            header.add_line(line)
        _add_info_headers(header, fields, in_path)
        for key, value in meta:
            header.add_meta(key, value)
        if fmt == "bcf":
            for name in contigs:
                if name not in header.contigs:
                    header.contigs.add(name)
            # pysam writes INFO/END for symbolic alleles and needs it declared to do so.
            if "END" not in header.info:
                header.info.add("END", 1, "Integer", "End position of the variant described in this record")
        records = _annotated_records(vcf, in_path, fields, values)
        if str(out_path) == "-":
            _write_records(records, header, "-", fmt, threads)
        else:
            with atomic_output(out_path) as tmp:
                _write_records(records, header, str(tmp), fmt, threads)


def _tags_declared_while_parsing(path, threads: int) -> list[str]:
    """The ##INFO/##FILTER/##FORMAT lines htslib adds to a header as it parses records that use
    undeclared tags. The output header is written before the records are read, so they are
    found in a first pass: without them BCF cannot encode such a record and text VCF readers warn."""
    with open_vcf(path, threads=threads) as vcf:
        before = set(str(vcf.header).splitlines())
        for _ in _iter_records(vcf, path):
            pass
        return [line for line in str(vcf.header).splitlines()
                if line.startswith(("##INFO=", "##FILTER=", "##FORMAT=")) and line not in before]


def _write_records(records, header, target: str, fmt: str, threads: int):
    import pysam

    if fmt == "bcf":
        with pysam.VariantFile(target, "wb", header=header, threads=threads) as out:
            for rec in records:
                out.write(rec)
        return
    if fmt == "vcf.gz":
        out = pysam.BGZFile("/dev/stdout" if target == "-" else target, "wb")
    else:
        out = contextlib.nullcontext(sys.stdout.buffer) if target == "-" else open(target, "wb")
    with out as fh:
        fh.write(str(header).encode())
        for rec in records:
            fh.write(str(rec).encode())
    if target == "-":
        sys.stdout.flush()


def _annotated_records(vcf, in_path, fields, values):
    """The input records in order, each with its ALTs' values set as INFO fields."""
    n_rows = len(values[fields[0].key]) if fields else None
    row = 0
    for rec in _iter_records(vcf, in_path):
        n_alts = len(rec.alts) if rec.alts else 0
        if n_alts:
            for info in fields:
                rec.info[info.key] = tuple(_info_value(v) for v in values[info.key][row : row + n_alts])
        row += max(n_alts, 1)
        yield rec
    if n_rows is not None and row != n_rows:
        raise GenossmError(f"changed while being read: {n_rows} ALT rows expected, {row} found", path=in_path)


def _info_value(value):
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return None
    return float(value) if isinstance(value, (float, np.floating)) else value
