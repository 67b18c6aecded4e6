"""Contig sequences as token ids, and the model's input windows cut from them.

Coordinates are 0-based half-open. A window may reach past a contig's ends: on a linear contig
those positions are PAD, on a circular contig they wrap around (modulo the contig length).
"""

import os
from collections import OrderedDict

import numpy as np

from genossm.tokenize import PAD, encode

_CACHED_CONTIGS = 2  # input is usually sorted by contig: a small LRU keeps one contig loaded once


class Genome:
    """Token ids of each contig, loaded on first use and kept for the most recently used few.

    ``load(name)`` returns the contig's sequence (str or bytes, any case, or a uint8 array that
    is already token ids); ``lengths`` and ``topologies`` ({name: "linear"|"circular"}) describe
    every contig without loading it.
    """

    def __init__(self, lengths: dict, topologies: dict, load, path=None):
        self.path = path  # where the sequences come from, for messages
        self.lengths = {name: int(n) for name, n in lengths.items()}
        self.topologies = dict(topologies)
        self._load = load
        self._cache = OrderedDict()

    @classmethod
    def open(cls, reference) -> "Genome":
        """From a reference path (FASTA, token store), a TokenStore or a
        :func:`genossm.io.fasta.open_reference` object."""
        from genossm.store import TokenStore

        if isinstance(reference, Genome):
            return reference
        if isinstance(reference, (str, os.PathLike)) and os.path.isdir(reference):
            reference = TokenStore.open(reference)
        if isinstance(reference, TokenStore):  # token ids as stored: no round trip through text
            store = reference
            return cls(
                {name: store.length(name) for name in store.names},
                {name: store.topology(name) for name in store.names},
                lambda name: store.window(name, 0, store.length(name))[0].copy(),  # not the softmask half
                path=store.path,
            )
        if isinstance(reference, (str, os.PathLike)):
            from genossm.io.fasta import open_reference

            reference = open_reference(reference)
        names = reference.names
        return cls(
            {name: reference.length(name) for name in names},
            {name: reference.topology(name) for name in names},
            lambda name: reference.fetch(name, 0, reference.length(name)),
            path=reference.path,
        )

    @classmethod
    def from_sequences(cls, sequences: dict, topology: dict | None = None) -> "Genome":
        """From in-memory ``{name: sequence}`` (str/bytes); ``topology`` defaults to linear."""
        topology = topology or {}
        return cls(
            {name: len(seq) for name, seq in sequences.items()},
            {name: topology.get(name, "linear") for name in sequences},
            sequences.__getitem__,
            path="<in memory>",
        )

    @property
    def names(self) -> list:
        return list(self.lengths)

    def circular(self, name: str) -> bool:
        return self.topologies[name] == "circular"

    def ids(self, name: str) -> np.ndarray:
        """The whole contig as token ids (uint8)."""
        if name in self._cache:
            self._cache.move_to_end(name)
            return self._cache[name]
        seq = self._load(name)
        ids = seq if isinstance(seq, np.ndarray) else encode(seq, name)
        self._cache[name] = ids
        while len(self._cache) > _CACHED_CONTIGS:
            self._cache.popitem(last=False)
        return ids

    def window(self, name: str, start: int, end: int) -> np.ndarray:
        """Token ids over [start, end): PAD past linear ends, wrapped on circular contigs."""
        seq = self.ids(name)
        n = len(seq)
        if self.circular(name):
            return np.take(seq, np.arange(start, end), mode="wrap")
        out = np.full(end - start, PAD, dtype=np.uint8)
        lo, hi = max(start, 0), min(end, n)
        if lo < hi:
            out[lo - start : hi - start] = seq[lo:hi]
        return out

    def haplotype(self, name: str, start: int, length: int, edit=None) -> np.ndarray:
        """``length`` token ids of a haplotype from reference position ``start``.

        ``edit`` = (p, ref_len, alt_ids): reference bases [p, p + ref_len) replaced by ``alt_ids``
        (p >= start, 0-based); the window keeps its length, so a deletion pulls in more bases
        downstream and an insertion pushes them out.
        """
        if edit is None:
            return self.window(name, start, start + length)
        p, ref_len, alt = edit
        alt = np.frombuffer(alt, dtype=np.uint8) if isinstance(alt, bytes) else np.asarray(alt, np.uint8)
        left = self.window(name, start, min(p, start + length))
        rest = max(length - len(left) - len(alt), 0)
        right = self.window(name, p + ref_len, p + ref_len + rest)
        return np.concatenate([left, alt, right])[:length]


def window_length(context: int, contig_length: int, circular: bool) -> int:
    """Window length used on a contig: ``context``, capped where more would only add repeats/PAD.

    A circular contig shorter than the context is seen once around (its full length); a linear
    one needs at most twice its length for a centred window to cover it from any position.
    """
    cap = contig_length if circular else 2 * contig_length
    return max(1, min(int(context), cap))


def centred_start(p: int, span: int, length: int) -> int:
    """Start of a ``length`` window whose middle is the middle of [p, p + span) (0-based)."""
    return p + span // 2 - length // 2
