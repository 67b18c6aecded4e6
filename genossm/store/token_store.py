"""Read side of the token store (format in ``genossm.store``): memory maps, no parsing."""

import json
from pathlib import Path

import numpy as np

from genossm.errors import GenossmError
from genossm.tokenize import PAD

FORMAT = "genossm-token-store"
FORMAT_VERSION = 1


class TokenStore:
    """A genome (one array per contig) or a read set (one concatenated array) of token ids.

    Coordinates are 0-based half-open. ``window`` may reach past either end of a sequence:
    linear sequences (and reads) are padded with PAD there, circular contigs wrap around.
    """

    def __init__(self, path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.is_reads = manifest["kind"] == "reads"
        self._maps = {}
        if self.is_reads:
            reads = manifest["reads"]
            self._names = None
            self._index = None
            self._tokens = _load(self.path, reads["tokens"])
            self._offsets = _load(self.path, reads["offsets"])
        else:
            self._contigs = manifest["contigs"]
            self._names = [c["name"] for c in self._contigs]
            self._index = {name: i for i, name in enumerate(self._names)}

    def __reduce__(self):  # pickles as path + manifest; memory maps reopen in the new process
        return type(self), (self.path, self.manifest)

    @classmethod
    def open(cls, path) -> "TokenStore":
        path = Path(path)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError:
            raise GenossmError("not a genossm token store (no manifest.json)", path=path) from None
        except (OSError, ValueError) as err:
            raise GenossmError(f"cannot read the store manifest: {err}", path=path) from None
        if manifest.get("format") != FORMAT:
            raise GenossmError("not a genossm token store (manifest format differs)", path=path)
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise GenossmError(
                f"store format version {manifest['format_version']} is newer than this genossm reads "
                f"({FORMAT_VERSION}); upgrade genossm",
                path=path,
            )
        return cls(path, manifest)

    @property
    def names(self) -> list:
        """Sequence names in input order (contigs, or read names for a read store)."""
        if self._names is None:
            text = (self.path / self.manifest["reads"]["names"]).read_text()
            self._names = text.split("\n")[:-1]
        return self._names

    def __len__(self) -> int:
        return len(self._offsets) - 1 if self.is_reads else len(self._names)

    def __contains__(self, name) -> bool:
        return name in self._lookup()

    def length(self, name: str) -> int:
        i = self._position(name)
        if self.is_reads:
            return int(self._offsets[i + 1] - self._offsets[i])
        return self._contigs[i]["length"]

    def topology(self, name: str) -> str:
        i = self._position(name)
        return "linear" if self.is_reads else self._contigs[i]["topology"]

    def heldout(self, split: str = "val") -> list:
        """Held-out regions of ``split`` as (name, start, end), 0-based half-open."""
        return [tuple(region) for region in self.manifest.get("heldout", {}).get(split, [])]

    def window(self, name: str, start: int, end: int):
        """``(ids uint8 (end - start,), softmask bool (end - start,))`` of ``name`` over
        [start, end), 0-based half-open; O(window)."""
        start, end = int(start), int(end)
        if end < start:
            raise GenossmError(f"window end {end} < start {start}", path=self.path, where=name)
        i = self._position(name)
        if self.is_reads:
            base = int(self._offsets[i])
            tokens, packed, length, circular = self._tokens, None, int(self._offsets[i + 1]) - base, False
        else:
            contig = self._contigs[i]
            tokens, packed = self._contig_maps(i)
            base, length, circular = 0, contig["length"], contig["topology"] == "circular"
        size = end - start
        # One allocation for both arrays: two large ones per call defeat malloc's reuse and
        # cost fresh page faults (~10x the copy itself for 1 Mb windows).
        buffer = np.empty(2 * size, dtype=np.uint8)
        ids, mask = buffer[:size], buffer[size:].view(bool)
        if 0 <= start and end <= length:  # the common case: one copy, no padding
            ids[:] = tokens[base + start : base + end]
            if packed is None:
                mask[:] = False
            else:
                mask[:] = _unpack(packed, start, end)
            return ids, mask
        ids[:] = PAD
        mask[:] = False
        for offset, lo, hi in _segments(start, end, length, circular):
            ids[offset : offset + hi - lo] = tokens[base + lo : base + hi]
            if packed is not None:
                mask[offset : offset + hi - lo] = _unpack(packed, lo, hi)
        return ids, mask

    def _lookup(self) -> dict:
        if self._index is None:
            self._index = {}
            for i, name in enumerate(self.names):
                self._index.setdefault(name, i)
        return self._index

    def _position(self, name) -> int:
        i = self._lookup().get(name)
        if i is None:
            raise GenossmError(f"unknown sequence name {name!r}", path=self.path)
        return i

    def _contig_maps(self, i):
        if i not in self._maps:
            contig = self._contigs[i]
            tokens = _load(self.path, contig["tokens"])
            packed = _load(self.path, contig["softmask"]) if contig["softmask"] else None
            self._maps[i] = (tokens, packed)
        return self._maps[i]


def _load(root, name):
    """Memory-map one array of the store; a missing or damaged file is a one-line error."""
    try:
        return np.load(root / name, mmap_mode="r")
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or err
        raise GenossmError(f"damaged token store: cannot read {name} ({reason})", path=root) from None


def _segments(start, end, length, circular):
    """(output offset, source start, source end) pieces of [start, end) that hold sequence."""
    if not circular:
        lo, hi = max(start, 0), min(end, length)
        if lo < hi:
            yield lo - start, lo, hi
        return
    position = start
    while position < end:
        lo = position % length
        hi = min(length, lo + end - position)
        yield position - start, lo, hi
        position += hi - lo


def _unpack(packed, start, end) -> np.ndarray:
    bits = np.unpackbits(packed[start >> 3 : (end + 7) >> 3])
    return bits[start & 7 : (start & 7) + end - start].view(bool)
