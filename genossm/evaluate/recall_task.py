"""Synthetic long-range recall sequences for DNA (induction-heads style).

An example is uniform random background with a fixed key k-mer planted twice: once followed by a
random value v-mer (the *pair*) and once followed by v [MASK] tokens (the *query*); the targets are
the value's bases. Forward case: pair early, query late, so the forward scan must carry the value
across the whole sequence. Mirror case: the forward example read backwards (positions reversed:
query early, value *before* the key late, the key reads reversed), so the reverse scan faces exactly
the forward scan's task.

Chance repeats: any occurrence of the key (or of its reversal, the mirror case's key) other than the
two planted ones, in the background or across a junction with the planted pieces, would point the
model at the wrong value; such examples are redrawn. A 16-mer occurs by chance about once in 4^16 /
2 ~ 2e9 positions per pattern, so redraws are rare even at 4M bases; shorter keys cap accuracy.

Distractors (training only): near-misses of the key (one or two bases changed) planted in the
background. Within a few thousand random bases a detector that checks only part of the key
(say its last 10 bases) is as good as an exact one; over 4M bases that part recurs by chance
several times, and each recurrence overwrites the remembered value. Near-misses make the
difference show up at training lengths.

Coordinates are 0-based; ``query`` is the first masked position, ``pair`` the first position of
the planted key + value (forward) or value + reversed key (mirror).
"""

from dataclasses import dataclass

import numpy as np

from genossm.errors import GenossmError
from genossm.tokenize import MASK

MAX_KEY_LENGTH = 31  # k-mer codes are 2 bits per base in an int64
_MAX_DRAWS = 100
_FAR_EDGE = 16  # "far" placement: pair and query lie 16 + length // 32 bases or less from the ends


@dataclass(frozen=True)
class RecallBatch:
    ids: np.ndarray  # (B, L) uint8 model input: the value at the query replaced by MASK
    targets: np.ndarray  # (B, v) uint8 the planted value, in input order
    query: np.ndarray  # (B,) int64 first masked position
    pair: np.ndarray  # (B,) int64 first position of the planted pair (key and value)


def make_key(rng: np.random.Generator, length: int) -> np.ndarray:
    """A random key of ``length`` bases (uint8) that differs from its reversal (the mirror case's key)."""
    if not 2 <= length <= MAX_KEY_LENGTH:
        raise GenossmError(f"key length must be in [2, {MAX_KEY_LENGTH}], got {length}")
    while True:
        key = rng.integers(0, 4, length, dtype=np.uint8)
        if not np.array_equal(key, key[::-1]):
            return key


def kmer_codes(ids: np.ndarray, k: int) -> np.ndarray:
    """2-bit codes (int64, first base most significant) of every k-mer of bases 0..3: (len - k + 1,)."""
    ids = ids.astype(np.int64)
    codes = np.zeros(len(ids) - k + 1, dtype=np.int64)
    for t in range(k):
        codes = (codes << 2) | ids[t : len(ids) - k + 1 + t]
    return codes


def kmer_positions(ids: np.ndarray, kmer: np.ndarray) -> np.ndarray:
    """Start positions of every occurrence of ``kmer`` in ``ids`` (both uint8 bases 0..3)."""
    k = len(kmer)
    if len(ids) < k:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(kmer_codes(ids, k) == kmer_codes(kmer, k)[0])


def make_batch(rng: np.random.Generator, key: np.ndarray, value_length: int, length: int, batch: int,
               mirror: bool, placement: str, distractors: int = 0) -> RecallBatch:
    """``batch`` examples of ``length`` bases.

    ``placement`` "far": the pair starts and the query ends within ``16 + length // 32`` bases of
    the two sequence ends (the recall distance is nearly the whole length); "anywhere": pair and
    query uniformly over all non-overlapping placements (training: every distance up to the length).
    ``distractors``: near-misses of the key drawn per example, each at a uniform position and
    dropped where it would cover the pair or the query.
    """
    span = len(key) + value_length
    if placement not in ("far", "anywhere"):
        raise GenossmError(f"placement must be 'far' or 'anywhere', got {placement!r}")
    if length < min_length(span, placement):
        raise GenossmError(f"sequence length {length} is too short for a key of {len(key)} and a value of "
                           f"{value_length} bases (need >= {min_length(span, placement)})")
    ids = np.empty((batch, length), dtype=np.uint8)
    targets = np.empty((batch, value_length), dtype=np.uint8)
    query = np.empty(batch, dtype=np.int64)
    pair = np.empty(batch, dtype=np.int64)
    for b in range(batch):
        seq, value, p, q = _forward_example(rng, key, value_length, length, placement, distractors)
        if mirror:  # positions reversed: the masked value now precedes the (reversed) key
            seq, value = seq[::-1], value[::-1]
            p, q = length - (p + span), length - (q + span)
        else:
            q += len(key)
        ids[b], targets[b], query[b], pair[b] = seq, value, q, p
    return RecallBatch(ids, targets, query, pair)


def min_length(span: int, placement: str) -> int:
    """Shortest sequence that holds a pair and a query of ``span`` bases each under ``placement``."""
    if placement == "anywhere":
        return 2 * span
    length = 2 * span + 2 * _FAR_EDGE
    while length < 2 * span + 2 * _far_edge(length):
        length += 1
    return length


def _far_edge(length: int) -> int:
    return _FAR_EDGE + length // 32


def near_miss(rng: np.random.Generator, key: np.ndarray) -> np.ndarray:
    """The key with one or two of its bases (distinct positions) changed to another base."""
    out = key.copy()
    where = rng.choice(len(key), size=int(rng.integers(1, 3)), replace=False)
    out[where] = (out[where] + rng.integers(1, 4, size=len(where))) % 4
    return out


def _forward_example(rng, key, value_length, length, placement, distractors=0):
    """(ids with the query masked, value, pair start, query key start) of a forward-case example."""
    k, span = len(key), len(key) + value_length
    reversed_key = key[::-1]
    for _ in range(_MAX_DRAWS):
        if placement == "far":
            edge = _far_edge(length)
            p = int(rng.integers(_FAR_EDGE, edge + 1))
            q = length - span - int(rng.integers(_FAR_EDGE, edge + 1))
        else:
            a, b = sorted(rng.integers(0, length - 2 * span + 1, size=2).tolist())
            p, q = a, b + span
        seq = rng.integers(0, 4, length, dtype=np.uint8)
        value = rng.integers(0, 4, value_length, dtype=np.uint8)
        seq[p : p + k] = key
        seq[p + k : p + span] = value
        seq[q : q + k] = key
        seq[q + k : q + span] = value  # the real bases, so the check sees the sequence as it truly is
        for _ in range(distractors):
            d = int(rng.integers(0, length - k + 1))
            if not (p - k < d < p + span or q - k < d < q + span):
                seq[d : d + k] = near_miss(rng, key)
        if (np.array_equal(kmer_positions(seq, key), [p, q])
                and len(kmer_positions(seq, reversed_key)) == 0):
            seq[q + k : q + span] = MASK
            return seq, value, p, q
    raise GenossmError(f"no sequence of length {length} without chance repeats of the key in {_MAX_DRAWS} "
                       "draws: use a longer key")


def neighbourhood_fits(length: int, neighbourhood: int, key_length: int, value_length: int) -> bool:
    """Whether the truncated baseline's crop (``neighbourhood_crop``) of every "far" example of
    ``length`` bases leaves the planted pair out: the pair ends at most ``edge + span`` bases from
    one end, the crop reaches ``neighbourhood`` bases past the masked value (or the whole width
    from the other end)."""
    span, edge = key_length + value_length, _far_edge(length)
    return (length - value_length - edge - neighbourhood >= edge + span
            and length - 2 * neighbourhood - value_length >= edge + span)


def neighbourhood_crop(batch: RecallBatch, neighbourhood: int, key_length: int):
    """The truncated-context baseline's inputs: for each example the ``2 * neighbourhood + v`` bases
    around its masked value (shifted inward at a sequence end), with the planted pair outside.

    Returns (ids (B, W) uint8, masked start within the crop (B,) int64).
    """
    length, v = batch.ids.shape[1], batch.targets.shape[1]
    width = min(length, 2 * neighbourhood + v)
    span = key_length + v
    starts = np.clip(batch.query - neighbourhood, 0, length - width)
    if np.any((batch.pair < starts + width) & (batch.pair + span > starts)):
        raise GenossmError(f"the query neighbourhood ({neighbourhood} bases each side) reaches the planted pair "
                           f"in sequences of length {length}: use a smaller neighbourhood or longer sequences")
    rows = np.arange(len(starts))[:, None]
    return batch.ids[rows, starts[:, None] + np.arange(width)], batch.query - starts
