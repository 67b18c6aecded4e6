"""FASTA reading: a streaming multi-record reader and random-access references.

Streaming (:func:`iter_fasta`): plain, gzip or bgzip FASTA, any number of records. The file is
read in ~1 MB blocks, decompressed on a background thread (zlib releases the GIL, so it overlaps
parsing on a second core); records are split with ``bytes.find`` and each record's sequence is
handed out as raw text chunks, never base by base in Python. Encode the chunks with
``genossm.tokenize.encode_with_softmask(chunk, skip_whitespace=True)``.

Topology from the header: a description word ``circular``, ``topology=circular`` or
``[topology=circular]`` (NCBI style; any case) makes a record circular, otherwise it is linear.

Random access (:func:`open_reference`): ``.names``, ``.length(name)``, ``.topology(name)`` and
``.fetch(name, start, end) -> str`` in 0-based half-open coordinates with the case of the file
kept. Like ``pysam.FastaFile.fetch``, ``end`` (and ``start``) past the contig end are clipped
to its length; ``start < 0`` or ``start > end`` is an error. Backends: ``pysam.FastaFile`` for
plain FASTA with a ``.fai`` and bgzip FASTA with ``.fai`` + ``.gzi``; the whole file in memory
for plain gzip or FASTA without an index (index big genomes with ``samtools faidx``); a genossm
token store directory (soft-masked bases come back lowercase).
"""

import itertools
import struct
from bisect import bisect_right
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

from genossm.errors import GenossmError
from genossm.io.files import detect_format, is_bgzf_header, is_gzip, iter_blocks, open_input, prefetch
from genossm.tokenize import _WHITESPACE, decode

_CIRCULAR_WORDS = {"circular", "topology=circular"}
_LINEAR_WORDS = {"linear", "topology=linear"}


@dataclass(frozen=True)
class FastaRecord:
    name: str  # first word of the header
    description: str  # the rest of the header line
    number: int  # 1-based record number within its file

    @property
    def topology(self) -> str:
        return header_topology(self.description)


def header_topology(description: str) -> str:
    """"circular" if a header word says so (circular, topology=circular), else "linear"."""
    for word in description.lower().split():
        word = word.strip("[](),;")
        if word in _CIRCULAR_WORDS:
            return "circular"
        if word in _LINEAR_WORDS:
            return "linear"
    return "linear"


def iter_fasta(path, hasher=None, progress=None):
    """Yield ``(record, chunks)`` per FASTA record, in file order.

    ``chunks`` iterates the record's sequence text as raw byte chunks (line breaks included);
    it must be consumed before advancing to the next record. ``hasher``/``progress`` as in
    :func:`genossm.io.files.iter_blocks`. Errors (empty file, no ``>`` header, empty or
    duplicate name, truncated gzip) name the file and the record or line.
    """
    events = _events(path, prefetch(iter_blocks(path, hasher, progress)))
    for record, group in itertools.groupby(events, key=itemgetter(0)):
        yield record, (chunk for _, chunk in group if chunk)


def read_fasta(path):
    """Yield ``(record, sequence bytes)`` with whitespace removed (case kept)."""
    for record, chunks in iter_fasta(path):
        yield record, b"".join(chunks).translate(None, _WHITESPACE)


def _events(path, blocks):
    # (record, chunk) pairs; each record first appears with chunk b"" so empty records show too.
    record, header, at_line_start = None, None, True
    first_number: dict[str, int] = {}
    number = newlines_before_first = 0
    seen_bytes = False
    for block in blocks:
        seen_bytes = True
        pos, size = 0, len(block)
        if record is None and header is None:
            rest = block.lstrip()
            if not rest:
                newlines_before_first += block.count(b"\n")
                continue
            pos = size - len(rest)
            if rest[:1] != b">":
                line = newlines_before_first + block.count(b"\n", 0, pos) + 1
                raise GenossmError("not FASTA: expected a '>' header line", path=path, where=f"line {line}")
        while pos < size:
            if header is not None:
                eol = block.find(b"\n", pos)
                if eol < 0:
                    header.append(block[pos:])
                    break
                header.append(block[pos:eol])
                pos, at_line_start = eol + 1, True
                number += 1
                record = _parse_header(b"".join(header), number, path, first_number)
                header = None
                yield record, b""
                continue
            if at_line_start and block[pos] == 62:  # '>'
                header, pos = [], pos + 1
                continue
            # The next '>' that starts a line (memchr-speed single-byte search); one inside a
            # line stays sequence text, which the tokenizer rejects.
            cut = block.find(b">", pos + 1)
            while cut > 0 and block[cut - 1] != 10:
                cut = block.find(b">", cut + 1)
            end = size if cut < 0 else cut
            yield record, block[pos:end]
            at_line_start, pos = block[end - 1] == 10, end
    if header is not None:
        number += 1
        yield _parse_header(b"".join(header), number, path, first_number), b""
    if not seen_bytes:
        raise GenossmError("empty file", path=path)
    if number == 0:
        raise GenossmError("no FASTA records (file holds only blank lines)", path=path)


def _parse_header(raw: bytes, number: int, path, first_number: dict) -> FastaRecord:
    text = raw.decode("utf-8", errors="replace").strip()
    name, description = (text.split(None, 1) + ["", ""])[:2]
    if not name:
        raise GenossmError("empty sequence name in '>' header", path=path, where=f"record {number}")
    if name in first_number:
        raise GenossmError(
            f"duplicate sequence name {name!r} (first seen as record {first_number[name]})",
            path=path, where=f"record {number}",
        )
    first_number[name] = number
    return FastaRecord(name, description, number)


class Reference:
    """Random access to a reference genome; see the module docstring for the coordinates."""

    def __init__(self, path, names, lengths):
        self.path = path
        self.names = list(names)
        self._lengths = dict(zip(self.names, (int(n) for n in lengths)))

    def length(self, name: str) -> int:
        self._require(name)
        return self._lengths[name]

    def topology(self, name: str) -> str:
        raise NotImplementedError

    def fetch(self, name: str, start: int = 0, end: int | None = None) -> str:
        """Sequence of ``name`` over [start, end) (0-based half-open), case as in the file."""
        length = self.length(name)
        end = length if end is None else end
        if start < 0 or start > end:
            raise GenossmError(f"bad interval [{start}, {end}) (0-based half-open)", path=self.path, where=name)
        return self._fetch(name, min(start, length), min(end, length))

    def _fetch(self, name: str, start: int, end: int) -> str:
        raise NotImplementedError

    def _require(self, name):
        if name not in self._lengths:
            raise GenossmError(f"unknown contig {name!r}", path=self.path)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _MemoryReference(Reference):
    def __init__(self, path):
        self._seqs, self._topologies = {}, {}
        for record, seq in read_fasta(path):
            self._seqs[record.name] = seq
            self._topologies[record.name] = record.topology
        super().__init__(path, self._seqs, (len(s) for s in self._seqs.values()))

    def topology(self, name):
        self._require(name)
        return self._topologies[name]

    def _fetch(self, name, start, end):
        return self._seqs[name][start:end].decode("ascii", errors="replace")


class _FaidxReference(Reference):
    """pysam.FastaFile over an indexed plain or bgzip FASTA; headers read back via the .fai."""

    def __init__(self, path, bgzip: bool):
        import pysam

        try:
            self._fasta = pysam.FastaFile(str(path))
        except (OSError, ValueError) as err:
            raise GenossmError(f"cannot open indexed FASTA: {err}", path=path) from None
        super().__init__(path, self._fasta.references, self._fasta.lengths)
        self._bgzip = bgzip
        self._topologies = None

    def topology(self, name):
        self._require(name)
        if self._topologies is None:
            self._topologies = self._read_topologies()
        return self._topologies[name]

    def _read_topologies(self):
        # Each header is the line just before the sequence offset stored in the .fai.
        offsets = {}
        with open(f"{self.path}.fai") as fai:
            for line in fai:
                fields = line.rstrip("\n").split("\t")
                offsets[fields[0]] = int(fields[2])
        read_range = _bgzf_range_reader(self.path) if self._bgzip else _plain_range_reader(self.path)
        topologies = {}
        for name in self.names:
            offset, back = offsets[name], 4096
            while True:
                text = read_range(max(0, offset - back), offset)
                gt = text.rfind(b"\n>", 0, len(text) - 1)
                if gt >= 0 or back >= offset:
                    header = text[gt + 2 if gt >= 0 else 1 :].decode("utf-8", errors="replace")
                    break
                back *= 4
            topologies[name] = header_topology((header.split(None, 1) + [""])[1])
        return topologies

    def _fetch(self, name, start, end):
        return self._fasta.fetch(name, start, end)

    def close(self):
        self._fasta.close()


def _plain_range_reader(path):
    def read_range(start, end):
        with open_input(path) as handle:
            handle.seek(start)
            return handle.read(end - start)

    return read_range


def _bgzf_range_reader(path):
    # .gzi: uint64 count, then (compressed offset, uncompressed offset) per block after the first.
    from Bio import bgzf

    raw = Path(f"{path}.gzi").read_bytes()
    (count,) = struct.unpack_from("<Q", raw)
    pairs = np.frombuffer(raw, dtype="<u8", count=2 * count, offset=8).reshape(count, 2)
    compressed = [0] + pairs[:, 0].tolist()
    uncompressed = [0] + pairs[:, 1].tolist()

    def read_range(start, end):
        block = bisect_right(uncompressed, start) - 1
        with bgzf.BgzfReader(str(path), "rb") as handle:
            handle.seek((compressed[block] << 16) | (start - uncompressed[block]))
            return handle.read(end - start)

    return read_range


def is_bgzip(path) -> bool:
    """True for BGZF files (see ``files.is_bgzf_header``)."""
    with open_input(path) as handle:
        return is_bgzf_header(handle.read(18))


def open_reference(path) -> Reference:
    """Open a FASTA file (plain, gzip or bgzip) or a genossm token store for random access."""
    path = Path(path)
    if path.is_dir():
        from genossm.store import TokenStore

        return _StoreReference(TokenStore.open(path))
    if detect_format(path) != "fasta":
        raise GenossmError("not a FASTA file", path=path)
    gzipped = is_gzip(path)
    bgzip = gzipped and is_bgzip(path)
    if Path(f"{path}.fai").exists() and (not gzipped or (bgzip and Path(f"{path}.gzi").exists())):
        for index in (Path(f"{path}.fai"), Path(f"{path}.gzi")):
            if index.exists() and index.stat().st_mtime < path.stat().st_mtime:
                # its offsets may point anywhere in the new file: sequence would come back wrong
                raise GenossmError(f"index {index.name} is older than the FASTA; rebuild it (samtools faidx)",
                                   path=path)
        return _FaidxReference(path, bgzip)
    return _MemoryReference(path)


class _StoreReference(Reference):
    def __init__(self, store):
        self._store = store
        super().__init__(store.path, store.names, (store.length(n) for n in store.names))

    def topology(self, name):
        self._require(name)
        return self._store.topology(name)

    def _fetch(self, name, start, end):
        ids, softmask = self._store.window(name, start, end)
        text = np.frombuffer(decode(ids).encode("ascii"), dtype=np.uint8).copy()
        text[softmask] += 32  # lowercase
        return text.tobytes().decode("ascii")
