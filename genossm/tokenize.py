"""Nucleotide tokenizer: one token per base, vectorized through a 256-entry lookup table.

Vocabulary (token id: meaning)::

    0 A   1 C   2 G   3 T   4 N   5 MASK   6 PAD

Lowercase (soft-masked) bases encode to the same token as uppercase; the soft-mask is returned
as a separate boolean track by :func:`encode_with_softmask`. IUPAC ambiguity codes
(R Y S W K M B D H V, either case) encode to N. Any other byte is an error naming the sequence
and the 0-based position of the first offending byte.

``COMPLEMENT[i]`` is the token id of the complement of token ``i`` (A<->T, C<->G; N, MASK and PAD
are their own complements), so the reverse complement of ids is a lookup plus a flip.
"""

import numpy as np

from genossm.errors import GenossmError

A, C, G, T, N, MASK, PAD = range(7)
VOCAB = ("A", "C", "G", "T", "N", "[MASK]", "[PAD]")
VOCAB_SIZE = len(VOCAB)
BASES = (A, C, G, T)

COMPLEMENT = np.array([T, G, C, A, N, MASK, PAD], dtype=np.uint8)

_INVALID = 255
_LUT = np.full(256, _INVALID, dtype=np.uint8)
for _letter, _token in (("A", A), ("C", C), ("G", G), ("T", T), ("N", N), ("U", T)):
    _LUT[ord(_letter)] = _LUT[ord(_letter.lower())] = _token
for _letter in "RYSWKMBDHV":
    _LUT[ord(_letter)] = _LUT[ord(_letter.lower())] = N
# Encoding table for bytes.translate (a C loop, ~3x faster than numpy fancy indexing): the token
# id, plus _LOWER for lowercase letters so one pass yields both ids and the soft-mask.
_LOWER = 8
_CASED = _LUT.copy()
_lower = np.frombuffer(b"acgtnuryswkmbdhv", dtype=np.uint8)
_CASED[_lower] |= _LOWER
_CASED_BYTES = _CASED.tobytes()
_WHITESPACE = b" \t\r\n\v\f"
_DECODE = np.frombuffer(b"ACGTN?-", dtype=np.uint8)


def _as_bytes(seq) -> bytes:
    # Non-ASCII characters become one '?' each, so byte positions stay character positions.
    if isinstance(seq, str):
        return seq.encode("ascii", errors="replace")
    if isinstance(seq, np.ndarray):
        return seq.astype(np.uint8, copy=False).tobytes()
    return seq if isinstance(seq, bytes) else bytes(seq)


def encode(seq, name: str = "sequence") -> np.ndarray:
    """Encode a DNA string/bytes to uint8 token ids (soft-masking is dropped)."""
    return encode_with_softmask(seq, name)[0]


def encode_with_softmask(seq, name: str = "sequence", offset: int = 0, skip_whitespace: bool = False):
    """Encode and return ``(ids uint8, softmask bool)``; softmask is True for lowercase bases.

    ``offset`` is added to positions in error messages (for sequences encoded in pieces).
    ``skip_whitespace=True`` drops spaces and line breaks first (FASTA lines encode without a join);
    positions then count sequence characters only.
    """
    raw = _as_bytes(seq)
    cased = np.frombuffer(raw.translate(_CASED_BYTES, _WHITESPACE if skip_whitespace else b""), np.uint8)
    if cased.size and cased.max() == _INVALID:
        pos = int(np.flatnonzero(cased == _INVALID)[0])
        if isinstance(seq, str):
            char = seq.translate({ord(c): None for c in _WHITESPACE.decode()}) if skip_whitespace else seq
            char = char[pos]
        else:
            char = chr((raw.translate(None, _WHITESPACE) if skip_whitespace else raw)[pos])
        raise GenossmError(f"invalid character {char!r} at position {offset + pos} (0-based)", where=name)
    return cased & 7, cased >= _LOWER


def decode(ids) -> str:
    """Token ids back to a string (A C G T N; MASK as '?', PAD as '-')."""
    ids = np.asarray(ids, dtype=np.uint8)
    return _DECODE[ids].tobytes().decode("ascii")


def reverse_complement(ids):
    """Reverse complement of token ids (numpy array or torch tensor, last axis is the sequence)."""
    if isinstance(ids, np.ndarray):
        return COMPLEMENT[ids][..., ::-1].copy()
    import torch

    table = torch.as_tensor(COMPLEMENT, device=ids.device, dtype=ids.dtype)
    return table[ids.long()].flip(-1)
