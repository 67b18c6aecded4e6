"""Left-normalization of a variant against the reference (as ``bcftools norm`` and ``vt normalize``).

Works on token ids and returns the minimal representation: ``(p, ref, alt)`` with ``p`` the
0-based position of the first changed reference base and no shared padding base, so one allele
of an indel is empty. A pure insertion or deletion in a repeat is shifted to its leftmost
equivalent position (the same haplotype results). Shifting stops at the contig start (also on
circular contigs: positions never wrap).
"""

import numpy as np


def left_normalize(seq: np.ndarray, p: int, ref: np.ndarray, alt: np.ndarray):
    """Minimal left-aligned ``(p, ref, alt)`` for the variant REF=``ref`` at 0-based ``p``.

    ``seq`` is the contig's token ids; ``ref`` must equal ``seq[p : p + len(ref)]``.
    """
    ref, alt = bytes(ref), bytes(alt)
    # Shared suffix first, then shared prefix: for complex alleles this is what bcftools keeps.
    while ref and alt and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while ref and alt and ref[0] == alt[0]:
        ref, alt, p = ref[1:], alt[1:], p + 1
    if bool(ref) != bool(alt):
        # Pure indel of `moved`: while the base before it equals its last base, inserting or
        # deleting one position earlier gives the same haplotype.
        moved = ref or alt
        while p > 0 and seq[p - 1] == moved[-1]:
            moved = bytes([seq[p - 1]]) + moved[:-1]
            p -= 1
        ref, alt = (moved, b"") if ref else (b"", moved)
    return p, np.frombuffer(ref, np.uint8), np.frombuffer(alt, np.uint8)
