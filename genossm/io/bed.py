"""BED regions (0-based half-open) and samtools-style region strings (1-based inclusive text).

BED: tab- or space-separated, at least 3 columns (chrom, start, end), optional name (column 4,
"." means none) and strand (column 6: "+", "-" or "."). Blank lines, ``#`` lines and lines whose
first word is ``track`` or ``browser`` are skipped (a contig named ``track1`` is data); plain or
gzip files. Every bad line raises a GenossmError naming the file and the 1-based line number.
"""

import gzip
import io
import zlib
from dataclasses import dataclass

from genossm.errors import GenossmError
from genossm.io.files import is_gzip, open_input


@dataclass(frozen=True)
class BedRegion:
    chrom: str
    start: int  # 0-based, inclusive
    end: int  # 0-based, exclusive
    name: str | None = None
    strand: str = "."

    def __str__(self) -> str:  # samtools style: 1-based inclusive
        return f"{self.chrom}:{self.start + 1}-{self.end}"


def read_bed(path, lengths: dict | None = None, nonempty: bool = False) -> list[BedRegion]:
    """Read a BED file. With ``lengths`` ({contig: length}), unknown contigs and ends past a
    contig's end are errors too; with ``nonempty``, zero-length intervals (legal BED: insertion
    points) are errors too."""
    handle = open_input(path)
    if is_gzip(path):
        handle = gzip.open(handle)
    regions = []
    try:
        with io.TextIOWrapper(handle, encoding="utf-8", errors="replace") as text:
            for number, line in enumerate(text, start=1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("#") or line.split(None, 1)[0] in ("track", "browser"):
                    continue
                regions.append(_parse_line(line, path, number, lengths, nonempty))
    except (EOFError, OSError, zlib.error) as err:
        raise GenossmError(f"cannot read BED file: {err}", path=path) from None
    return regions


def _parse_line(line: str, path, number: int, lengths, nonempty: bool) -> BedRegion:
    where = f"line {number}"
    fields = line.split("\t") if "\t" in line else line.split()
    if len(fields) < 3:
        raise GenossmError(f"expected at least 3 columns (chrom, start, end), found {len(fields)}", path=path, where=where)
    chrom = fields[0].strip()
    try:
        start, end = int(fields[1]), int(fields[2])
    except ValueError:
        raise GenossmError(f"start and end must be integers, got {fields[1]!r} and {fields[2]!r}", path=path, where=where) from None
    if start < 0:
        raise GenossmError(f"negative start {start}", path=path, where=where)
    if end < start:
        raise GenossmError(f"end {end} < start {start}", path=path, where=where)
    if nonempty and end == start:
        raise GenossmError(f"empty interval (start = end = {start}): no bases to read", path=path, where=where)
    name = fields[3].strip() if len(fields) > 3 else None
    strand = fields[5].strip() if len(fields) > 5 else "."
    if strand not in ("+", "-", "."):
        raise GenossmError(f"strand must be '+', '-' or '.', got {strand!r}", path=path, where=where)
    region = BedRegion(chrom, start, end, None if name in (None, "", ".") else name, strand)
    if lengths is not None:
        _check_bounds(region, lengths, path, where)
    return region


def _check_bounds(region: BedRegion, lengths: dict, path, where):
    if region.chrom not in lengths:
        raise GenossmError(f"unknown contig {region.chrom!r}", path=path, where=where)
    if region.end > lengths[region.chrom]:
        raise GenossmError(
            f"end {region.end} is past the end of {region.chrom!r} (length {lengths[region.chrom]})",
            path=path, where=where,
        )


def parse_region(text: str, lengths: dict | None = None) -> BedRegion:
    """Parse ``chr:start-end`` (1-based inclusive, commas allowed) or ``chr`` (whole contig,
    needs ``lengths``) into a 0-based half-open BedRegion. The last ':' splits, so contig
    names holding ':' work."""
    if lengths is not None and text in lengths:
        return BedRegion(text, 0, lengths[text])
    chrom, colon, span = text.rpartition(":")
    if not colon:
        chrom, span = text, ""
    if span:
        first, dash, last = span.replace(",", "").partition("-")
        try:
            start = int(first) - 1
            end = int(last) if dash and last else (lengths or {}).get(chrom)
        except ValueError:
            raise GenossmError("expected chr:start-end (1-based, inclusive)", where=f"region {text!r}") from None
        if end is None:
            raise GenossmError("open-ended region needs a known contig length", where=f"region {text!r}")
    else:
        if lengths is None or chrom not in lengths:
            raise GenossmError(f"unknown contig {chrom!r}", where=f"region {text!r}")
        start, end = 0, lengths[chrom]
    if start < 0 or end <= start:  # start is 0-based here, end 1-based inclusive: end >= start + 1
        raise GenossmError("start must be >= 1 and end >= start (1-based, inclusive)", where=f"region {text!r}")
    region = BedRegion(chrom, start, end)
    if lengths is not None:
        _check_bounds(region, lengths, None, f"region {text!r}")
    return region
