"""Where training and validation windows lie: pure functions of the store layout and a random generator.

Coordinates are 0-based half-open. On a circular contig a stretch or window may run past the contig
end (``end > length``); the store wraps it around the origin.

Training windows never touch a held-out base (of any split): the training stretches are each
contig minus its held-out regions (on a circular contig the stretch across the origin stays one
piece). A stretch is drawn with probability proportional to its length, then a window uniformly
inside it; a stretch shorter than the window is taken whole (the caller pads it). A circular
contig without held-out regions is one stretch on which a window may start anywhere.

Validation windows tile each held-out region of the validation split with window-sized chunks.
A chunk shorter than the window (a short region, or a region's last piece) is centred in a window
filled with the bases around it, so the model sees real context; only the chunk's bases are scored.
"""

from dataclasses import dataclass

import numpy as np

HELDOUT_SPLITS = ("val", "test")


@dataclass(frozen=True)
class Layout:
    """What window planning needs to know about a store: contig names, lengths, topology, held-out regions."""

    names: list
    lengths: np.ndarray  # (n_contigs,) int64
    circular: np.ndarray  # (n_contigs,) bool
    heldout: dict  # split -> list of (name, start, end), 0-based half-open

    @classmethod
    def from_store(cls, store, splits=HELDOUT_SPLITS):
        names = list(store.names)
        lengths = np.array([store.length(n) for n in names], dtype=np.int64)
        if store.is_reads:
            circular = np.zeros(len(names), dtype=bool)
        else:
            circular = np.array([store.topology(n) == "circular" for n in names], dtype=bool)
        heldout = {split: [(n, int(s), int(e)) for n, s, e in store.heldout(split)] for split in splits}
        return cls(names, lengths, circular, heldout)


class TrainingStretches:
    """The stretches a training window may cover, and length-weighted sampling of windows in them."""

    def __init__(self, layout: Layout):
        index = {name: i for i, name in enumerate(layout.names)}
        blocked = {}
        for regions in layout.heldout.values():
            for name, start, end in regions:
                blocked.setdefault(index[name], []).append((start, end))
        contig, start, end = [], [], []
        for i, length in enumerate(layout.lengths.tolist()):
            for s, e in _free_stretches(length, blocked.get(i, []), bool(layout.circular[i])):
                contig.append(i)
                start.append(s)
                end.append(e)
        self.contig = np.array(contig, dtype=np.int64)
        self.start = np.array(start, dtype=np.int64)
        self.end = np.array(end, dtype=np.int64)
        # a whole circular contig: windows may start anywhere and wrap
        self.whole_circle = layout.circular[self.contig] & (self.end - self.start == layout.lengths[self.contig])
        self.cumulative = np.cumsum(self.end - self.start)

    @property
    def total(self) -> int:
        """Bases available for training."""
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    def sample(self, rng: np.random.Generator, window: int):
        """Draw one window: ``(contig index, start, end)`` with ``end - start <= window``."""
        k = int(np.searchsorted(self.cumulative, rng.integers(self.total), side="right"))
        start, end = int(self.start[k]), int(self.end[k])
        length = end - start
        if self.whole_circle[k]:
            offset = start + int(rng.integers(length))
            return int(self.contig[k]), offset, offset + min(window, length)
        if length > window:
            offset = start + int(rng.integers(length - window + 1))
            return int(self.contig[k]), offset, offset + window
        return int(self.contig[k]), start, end


def _free_stretches(length: int, blocked, circular: bool):
    """``[0, length)`` minus the ``blocked`` intervals, as sorted (start, end) pieces."""
    merged = []
    for s, e in sorted((max(0, s), min(length, e)) for s, e in blocked):
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    pieces, cursor = [], 0
    for s, e in merged:
        if s > cursor:
            pieces.append((cursor, s))
        cursor = e
    if cursor < length:
        pieces.append((cursor, length))
    if circular and merged and len(pieces) >= 2 and pieces[0][0] == 0 and pieces[-1][1] == length:
        # the free pieces at both ends meet across the origin: one stretch running past the end
        head = pieces.pop(0)
        tail = pieces.pop()
        pieces.append((tail[0], length + head[1]))
    return pieces


@dataclass(frozen=True)
class ValWindow:
    """One validation window: fetch ``[start, start + length)`` of contig ``contig`` (wrapping on
    circular contigs), pad to the window size, and score positions ``[score_start, score_end)``."""

    contig: int
    start: int
    length: int
    score_start: int
    score_end: int


def validation_windows(layout: Layout, window: int, split: str = "val", max_windows=None) -> list:
    """Fixed windows covering every held-out base of ``split`` once (see the module docstring)."""
    index = {name: i for i, name in enumerate(layout.names)}
    out = []
    for name, start, end in layout.heldout.get(split, []):
        i = index[name]
        length, circular = int(layout.lengths[i]), bool(layout.circular[i])
        for chunk_start in range(max(0, start), min(end, length), window):
            chunk = min(chunk_start + window, end, length) - chunk_start
            out.append(_place(i, chunk_start, chunk, length, circular, window))
    if max_windows is not None and len(out) > max_windows:
        keep = np.unique(np.linspace(0, len(out) - 1, max_windows).round().astype(np.int64))
        out = [out[k] for k in keep]
    return out


def _place(contig: int, chunk_start: int, chunk: int, length: int, circular: bool, window: int) -> ValWindow:
    span = min(window, length)  # bases fetched; a contig shorter than the window is fetched whole
    start = chunk_start - (span - chunk) // 2
    if circular:
        start %= length
        offset = (chunk_start - start) % length
    else:
        start = min(max(start, 0), length - span)
        offset = chunk_start - start
    return ValWindow(contig, start, span, offset, offset + chunk)
