"""k-mer Markov baselines for masked-base prediction: order k and base composition (GC content).

An order-k model gives P(x_j | x_{j-k} .. x_{j-1}). Counts come from both strands (every training
sequence and its reverse complement), so the model is strand-symmetric like the genome. Smoothing
is hierarchical: P_m(a | c) = (n(c a) + beta P_{m-1}(a | c')) / (n(c) + beta), with c' the context
c without its farthest base and P_{-1}(a) = 1/4, so an unseen context falls back to shorter ones and
no probability is zero. :func:`select_markov` picks k and beta on a validation slice.

A masked base whose flanks are known gets the chain's exact posterior given everything else,

    P(x_i = a | rest) ∝ prod_{j=i}^{i+k} P(x_j | x_{j-k} .. x_{j-1}), with x_i = a,

the k + 1 factors whose (k + 1)-mer contains position i. Near an unknown base (N, PAD) a factor's
context is cut at the unknown base, and factors whose context no longer reaches i are dropped.
Sequences are uint8 token ids (genossm.tokenize): 0..3 are bases, anything else is unknown.
"""

import numpy as np

from genossm.evaluate.metrics import MaskedScore
from genossm.tokenize import reverse_complement

_CHUNK = 1 << 22  # bases counted at a time (bounds the int64 code arrays)


class KmerCounts:
    """Counts of every m-mer, m = 1 .. max_order + 1, on both strands; ``counts[m - 1]`` has 4^m
    entries indexed by the 2-bit code of the m-mer (first base most significant)."""

    def __init__(self, max_order: int):
        self.max_order = max_order
        self.counts = [np.zeros(4 ** (m + 1), dtype=np.int64) for m in range(max_order + 1)]

    def add(self, ids: np.ndarray):
        """Count the k-mers of ``ids`` and of its reverse complement (k-mers with unknown bases skipped)."""
        for strand in (ids, reverse_complement(ids)):
            for start in range(0, len(strand), _CHUNK):
                # m-mers starting in [start, start + _CHUNK), read through the overlap
                self._count(strand[start : start + _CHUNK + self.max_order], min(_CHUNK, len(strand) - start))

    def _count(self, piece: np.ndarray, starts: int):
        known = piece < 4
        x = np.where(known, piece, 0).astype(np.int64)
        code, ok = np.zeros(len(piece), dtype=np.int64), np.ones(len(piece), dtype=bool)
        for m in range(1, self.max_order + 2):
            n = len(piece) - m + 1
            if n <= 0:
                return
            code = (code[:n] << 2) | x[m - 1 : m - 1 + n]  # the m-mer starting at each position
            ok = ok[:n] & known[m - 1 : m - 1 + n]
            codes = code[: min(n, starts)][ok[: min(n, starts)]]
            if 4**m <= 4 * len(codes):
                self.counts[m - 1] += np.bincount(codes, minlength=4**m)
            else:  # sparse: sort instead of a 4^m histogram per chunk
                unique, counts = np.unique(codes, return_counts=True)
                self.counts[m - 1][unique] += counts

    def merge(self, other: "KmerCounts"):
        """Add ``other``'s counts (same max_order) to these."""
        for mine, theirs in zip(self.counts, other.counts, strict=True):
            mine += theirs

    @property
    def bases(self) -> int:
        """Known bases counted, both strands."""
        return int(self.counts[0].sum())


def smoothed_log2_tables(counts: KmerCounts, order: int, beta: float) -> list:
    """log2 P_m(a | c) for m = 0 .. order, each float32 (4^(m+1),) indexed by the code of c a."""
    tables, previous = [], None
    for m in range(order + 1):
        c = counts.counts[m].astype(np.float32).reshape(-1, 4 ** max(m - 1, 0), 4)  # (4 or 1, 4^(m-1), 4)
        prior = np.float32(0.25) if m == 0 else previous[None]  # P_{m-1} of the context's nearer m - 1 bases
        prob = (c + np.float32(beta) * prior) / (c.sum(-1, keepdims=True) + np.float32(beta))
        previous = prob.reshape(-1, 4)
        tables.append(np.log2(previous).reshape(-1))
    return tables


class MarkovModel:
    """A smoothed order-k model (``tables`` from :func:`smoothed_log2_tables`, at least k + 1 of them)."""

    def __init__(self, tables: list, order: int, beta: float):
        self.tables, self.order, self.beta = tables[: order + 1], order, beta

    @classmethod
    def fit(cls, counts: KmerCounts, order: int, beta: float) -> "MarkovModel":
        return cls(smoothed_log2_tables(counts, order, beta), order, beta)

    def masked_log2_probs(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """(n, 4) log2 posterior of A, C, G, T at each of ``positions`` (indices into ``ids``) given
        every other base of ``ids``."""
        k, positions = self.order, np.asarray(positions, dtype=np.int64)
        known = ids < 4
        x = np.where(known, ids, 0).astype(np.int64)
        unknown_before = np.concatenate([[0], np.cumsum(~known)])
        lo, hi = positions - k, positions + k + 1
        inside = (lo >= 0) & (hi <= len(ids))
        fast = np.zeros(len(positions), dtype=bool)
        fast[inside] = unknown_before[hi[inside]] == unknown_before[lo[inside]]
        scores = np.empty((len(positions), 4))
        if fast.any():
            scores[fast] = self._flanked(x, positions[fast])
        for row in np.flatnonzero(~fast):
            scores[row] = self._near_unknown(x, known, int(positions[row]))
        top = scores.max(-1, keepdims=True)
        return scores - top - np.log2(np.exp2(scores - top).sum(-1, keepdims=True))

    def _flanked(self, x, positions):
        """Unnormalized log2 posterior where all 2k flanking bases are known: (n, 4)."""
        k, table = self.order, self.tables[self.order]
        near = x[positions[:, None] + np.arange(-k, k + 1)]  # (n, 2k + 1)
        near[:, k] = 0  # the masked base's digit is added per candidate below
        weights = 4 ** np.arange(k, -1, -1, dtype=np.int64)  # (k + 1,)
        scores = np.zeros((len(positions), 4))
        for d in range(k + 1):  # the (k + 1)-mer ending d bases after the masked one; its digit weight is 4^d
            code = near[:, d : d + k + 1] @ weights  # (n,)
            scores += table[code[:, None] + np.arange(4) * 4**d]
        return scores

    def _near_unknown(self, x, known, i):
        """Unnormalized log2 posterior at i with unknown bases or sequence ends within k: (4,)."""
        scores = np.zeros(4)
        for d in range(self.order + 1):
            j = i + d
            if j >= len(x) or (d and not known[j]):
                continue
            m = 0  # context length: back from j to the first unknown base (i itself counts as known)
            while m < self.order and j - m - 1 >= 0 and (known[j - m - 1] or j - m - 1 == i):
                m += 1
            if d > m:
                continue  # this factor does not depend on x_i
            digits = x[j - m : j + 1].copy()
            digits[m - d] = 0
            code = int(digits @ (4 ** np.arange(m, -1, -1, dtype=np.int64)))
            scores += self.tables[m][code + np.arange(4) * 4**d]
        return scores

    def score(self, pieces) -> MaskedScore:
        """Masked-base score over ``pieces``: (ids, positions) pairs, positions holding A/C/G/T."""
        score = MaskedScore()
        for ids, positions in pieces:
            score.add(self.masked_log2_probs(ids, positions), ids[positions].astype(np.int64))
        return score


def composition_log2_probs(counts: KmerCounts) -> np.ndarray:
    """(4,) log2 base frequencies of both strands: P(G) = P(C) = GC / 2, P(A) = P(T) = (1 - GC) / 2."""
    return np.log2(counts.counts[0] / counts.counts[0].sum())


def composition_score(counts: KmerCounts, pieces) -> MaskedScore:
    log2p = composition_log2_probs(counts)
    score = MaskedScore()
    for ids, positions in pieces:
        score.add(np.broadcast_to(log2p, (len(positions), 4)), ids[positions].astype(np.int64))
    return score


def select_markov(counts: KmerCounts, pieces, betas) -> tuple:
    """The (order, beta) with the lowest masked-base cross-entropy on ``pieces`` among orders
    0 .. counts.max_order and ``betas``; returns (order, beta, grid of every candidate's score)."""
    grid = []
    for beta in betas:
        tables = smoothed_log2_tables(counts, counts.max_order, beta)
        for order in range(counts.max_order + 1):
            score = MarkovModel(tables, order, beta).score(pieces)
            grid.append({"order": order, "beta": float(beta), **score.to_dict()})
    best = min(grid, key=lambda row: row["bits_per_base"])
    return best["order"], best["beta"], grid
