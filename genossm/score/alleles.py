"""Per-ALT checks and normalization before scoring: each ALT row gets a status and, when it can be
scored, its minimal left-normalized edit in 0-based reference coordinates.
"""

import re
from dataclasses import dataclass

import numpy as np

from genossm.errors import GenossmError
from genossm.score.genome import Genome, window_length
from genossm.score.normalize import left_normalize
from genossm.tokenize import encode

# Status of each ALT row, in the order they are checked (the first that applies is reported).
STATUSES = {
    "ok": "scored",
    "unknown_contig": "contig not in the reference (only with skip_unknown_contigs)",
    "out_of_range": "POS < 1, or REF reaches past the contig end",
    "ref_mismatch": "REF differs from the reference at POS (case-insensitive; IUPAC codes match N)",
    "no_alt": "record without ALT allele ('.')",
    "symbolic": "ALT is not a base sequence: <ID>, '*', a breakend or other non-sequence text",
    "alt_equals_ref": "ALT is the same sequence as REF",
    "non_acgt": "the changed bases (after normalization) contain N or another non-ACGT code",
    "too_long": "the changed span is longer than half the window (context)",
}

_SYMBOLIC = re.compile(r"^<.*>$|^\*$|[\[\]]|^\.|\.$")


@dataclass(slots=True)
class Allele:
    """One scorable ALT: the left-normalized minimal edit (0-based reference coordinates)."""

    contig: str  # reference contig name
    p: int  # first changed reference base, 0-based
    ref: np.ndarray  # token ids of the replaced reference bases (may be empty: insertion)
    alt: np.ndarray  # token ids of the new bases (may be empty: deletion)
    window: int  # window length on this contig

    @property
    def span(self) -> int:
        """Scored span length: the longer allele, so ref and alt haplotypes sum the same count."""
        return max(len(self.ref), len(self.alt))


def _encode(allele: str):
    try:
        return encode(allele)
    except GenossmError:
        return None


def prepare_alleles(table, genome: Genome, contig_map: dict, context: int):
    """Status (per row) and :class:`Allele` (per row with status ok, else None), in row order.

    ``table`` has columns chrom, pos (1-based), ref, alt; ``contig_map`` maps chrom -> reference
    contig name or None. Rows are visited contig by contig so each contig is loaded once.
    """
    n = len(table)
    statuses = np.empty(n, dtype=object)
    alleles = [None] * n
    chroms = table["chrom"].to_numpy()
    order = sorted(range(n), key=lambda i: (str(contig_map.get(chroms[i])), i))
    positions, refs, alts = table["pos"].to_numpy(), table["ref"].to_numpy(), table["alt"].to_numpy()
    for i in order:
        name = contig_map.get(chroms[i])
        statuses[i], alleles[i] = _check(genome, name, int(positions[i]) - 1, refs[i], alts[i], context)
    return statuses, alleles


def _check(genome: Genome, name, p: int, ref: str, alt: str, context: int):
    if name is None:
        return "unknown_contig", None
    seq = genome.ids(name)
    if p < 0 or p + len(ref) > len(seq):
        return "out_of_range", None
    ref_ids = _encode(ref)
    if ref_ids is None or not np.array_equal(ref_ids, seq[p : p + len(ref)]):
        return "ref_mismatch", None
    if alt == ".":
        return "no_alt", None
    alt_ids = None if _SYMBOLIC.search(alt) else _encode(alt)
    if alt_ids is None:
        return "symbolic", None
    p, ref_min, alt_min = left_normalize(seq, p, ref_ids, alt_ids)
    if len(ref_min) == 0 and len(alt_min) == 0:
        return "alt_equals_ref", None
    if (ref_min > 3).any() or (alt_min > 3).any():
        return "non_acgt", None
    window = window_length(context, len(seq), genome.circular(name))
    allele = Allele(name, p, ref_min, alt_min, window)
    if allele.span > window // 2:
        return "too_long", None
    return "ok", allele
