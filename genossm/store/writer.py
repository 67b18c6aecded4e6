"""Write side of the token store (format in ``genossm.store``): streaming contig and read writers,
the manifest, and ``create_store`` for in-memory sequences."""

import datetime
import json
import struct
from pathlib import Path

import numpy as np

from genossm import __version__
from genossm.errors import GenossmError
from genossm.store.token_store import FORMAT, FORMAT_VERSION, TokenStore
from genossm.tokenize import BASES, N, VOCAB, encode_with_softmask
from genossm.utils.atomic import atomic_output

_NPY_HEADER = 128  # fixed, so the header can be rewritten with the final length
_COUNTED = (*BASES, N)
_COUNT_NAMES = [VOCAB[t] for t in _COUNTED]


class _NpyStream:
    """Append-only writer of a 1-D .npy array whose length is known only at the end."""

    def __init__(self, path, dtype):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), 0
        self._file = open(path, "wb")
        self._file.write(bytes(_NPY_HEADER))

    def write(self, array):
        array = np.ascontiguousarray(array, dtype=self.dtype)
        self._file.write(memoryview(array).cast("B"))
        self.length += array.size

    def close(self):
        header = repr({"descr": self.dtype.str, "fortran_order": False, "shape": (self.length,)}).encode()
        header = header.ljust(_NPY_HEADER - 11) + b"\n"
        self._file.seek(0)
        self._file.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
        self._file.close()


class _SoftmaskStream:
    """Soft-mask bits packed 8 bases per byte; the file appears only at the first lowercase base."""

    def __init__(self, path):
        self.path, self.count = Path(path), 0  # count: soft-masked bases
        self._stream, self._before, self._carry = None, 0, np.zeros(0, dtype=bool)

    def write(self, mask):
        hits = int(np.count_nonzero(mask))
        if self._stream is None:
            if not hits:
                self._before += mask.size
                return
            self._stream = _NpyStream(self.path, np.uint8)
            self._stream.write(np.zeros(self._before >> 3, dtype=np.uint8))
            self._carry = np.zeros(self._before & 7, dtype=bool)
        self.count += hits
        bits = np.concatenate([self._carry, mask]) if self._carry.size else mask
        whole = bits.size & ~7  # pack whole bytes; carry the rest to the next chunk
        self._stream.write(np.packbits(bits[:whole]))
        self._carry = bits[whole:]

    def close(self):
        if self._stream is not None:
            self._stream.write(np.packbits(self._carry))
            self._stream.close()


def _counts(ids) -> np.ndarray:
    """Counts of A, C, G, T, N in ``ids`` (encoder output: nothing else occurs, so N is the rest)."""
    bases = [np.count_nonzero(ids == t) for t in BASES]
    return np.array([*bases, ids.size - sum(bases)], dtype=np.int64)


def _count_fields(counts, length) -> dict:
    return {
        "base_counts": dict(zip(_COUNT_NAMES, (int(c) for c in counts))),
        "n_fraction": float(counts[-1] / length) if length else 0.0,
    }


class GenomeWriter:
    """Streams contigs into ``root/contigs``; collects their manifest entries in input order."""

    def __init__(self, root):
        self.root = Path(root)
        (self.root / "contigs").mkdir()
        self.contigs = []
        self._seen = {}

    def add(self, name, chunks, topology="linear", source=None, skip_whitespace=False, path=None, where=None):
        """Encode ``chunks`` (str/bytes pieces of one sequence) as contig ``name``.

        ``path``/``where`` name the input file and record in error messages.
        """
        where = where or repr(name)
        if name in self._seen:
            raise GenossmError(f"duplicate sequence name {name!r} (also in {self._seen[name]})", path=path, where=where)
        if topology not in ("linear", "circular"):
            raise GenossmError(f"topology must be 'linear' or 'circular', got {topology!r}", path=path, where=where)
        self._seen[name] = f"{path}, {where}" if path else where
        stem = f"contigs/{len(self.contigs):06d}"
        tokens = _NpyStream(self.root / f"{stem}.tokens.npy", np.uint8)
        softmask = _SoftmaskStream(self.root / f"{stem}.softmask.npy")
        counts = np.zeros(len(_COUNTED), dtype=np.int64)
        try:
            for chunk in chunks:
                try:
                    ids, mask = encode_with_softmask(chunk, name, offset=tokens.length, skip_whitespace=skip_whitespace)
                except GenossmError as err:
                    raise GenossmError(err.problem, path=path, where=where) from None
                tokens.write(ids)
                counts += _counts(ids)
                softmask.write(mask)
        finally:
            tokens.close()
            softmask.close()
        if tokens.length == 0:
            raise GenossmError("sequence is empty", path=path, where=where)
        self.contigs.append({
            "name": name,
            "length": tokens.length,
            "topology": topology,
            "source": source,
            "tokens": f"{stem}.tokens.npy",
            "softmask": f"{stem}.softmask.npy" if softmask.count else None,
            **_count_fields(counts, tokens.length),
            "softmasked": softmask.count,
        })

    def lengths(self) -> dict:
        return {c["name"]: c["length"] for c in self.contigs}

    def manifest(self, sources, options, heldout) -> dict:
        counts = np.array([list(c["base_counts"].values()) for c in self.contigs], dtype=np.int64).sum(0)
        length = sum(c["length"] for c in self.contigs)
        return _manifest("genome", sources, options, length, counts, heldout, contigs=self.contigs)


class ReadsWriter:
    """Streams read batches into one token array plus offsets and names (``root/reads``)."""

    def __init__(self, root):
        self.root = Path(root)
        (self.root / "reads").mkdir()
        self._tokens = _NpyStream(self.root / "reads/tokens.npy", np.uint8)
        self._offsets = _NpyStream(self.root / "reads/offsets.npy", np.int64)
        self._offsets.write(np.zeros(1, dtype=np.int64))
        self._names = open(self.root / "reads/names.txt", "w", encoding="utf-8")
        self._counts = np.zeros(len(_COUNTED), dtype=np.int64)
        self.count = 0

    def add(self, batch):
        self._offsets.write(self._tokens.length + np.cumsum(batch.lengths))
        self._tokens.write(batch.ids)
        self._names.write("\n".join(batch.names) + "\n")
        self._counts += _counts(batch.ids)
        self.count += len(batch.names)

    def close(self):
        self._tokens.close()
        self._offsets.close()
        self._names.close()

    def manifest(self, sources, options, stats) -> dict:
        reads = {
            "count": self.count,
            "tokens": "reads/tokens.npy",
            "offsets": "reads/offsets.npy",
            "names": "reads/names.txt",
            "stats": stats,
        }
        return _manifest("reads", sources, options, self._tokens.length, self._counts, {}, reads=reads)


def _manifest(kind, sources, options, length, counts, heldout, **body) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "tool": "genossm",
        "tool_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "vocab": list(VOCAB),
        "sources": sources,
        "options": options,
        "length": int(length),
        **_count_fields(counts, length),
        "heldout": heldout,
        **body,
    }


def write_manifest(root, manifest):
    (Path(root) / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def check_heldout(heldout, lengths, path=None) -> dict:
    """Validate {split: [(name, start, end), ...]} against contig lengths; return JSON-ready lists."""
    checked = {}
    for split, regions in (heldout or {}).items():
        checked[split] = []
        for name, start, end in regions:
            if name not in lengths:
                raise GenossmError(f"held-out region on unknown contig {name!r}", path=path, where=f"split {split!r}")
            if not 0 <= start < end <= lengths[name]:
                raise GenossmError(
                    f"held-out region [{start}, {end}) is empty or outside {name!r} (length {lengths[name]})",
                    path=path, where=f"split {split!r}",
                )
            checked[split].append([name, int(start), int(end)])
    return checked


def check_output(out):
    """Refuse to replace anything at ``out`` but an existing token store."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and (out / "manifest.json").is_file()):
        raise GenossmError("output path exists and is not a genossm token store; not replacing it", path=out)
    if out.exists():
        TokenStore.open(out)


def create_store(path, sequences, topology=None, heldout=None) -> TokenStore:
    """Write a genome store from in-memory ``(name, seq)`` pairs (str or bytes).

    ``topology``: {name: "linear"|"circular"} (unlisted contigs are linear); ``heldout``:
    {split: [(name, start, end), ...]} in 0-based half-open coordinates.
    """
    topology = dict(topology or {})
    check_output(path)
    with atomic_output(path, directory=True) as tmp:
        writer = GenomeWriter(tmp)
        for name, seq in sequences:
            writer.add(name, [seq], topology.pop(name, "linear"))
        if topology:
            raise GenossmError(f"topology given for unknown contig {next(iter(topology))!r}")
        heldout = check_heldout(heldout, writer.lengths())
        write_manifest(tmp, writer.manifest(sources=[], options={"created_by": "create_store"}, heldout=heldout))
    return TokenStore.open(path)
