"""Memory-mapped nucleotide token store: what ``genossm preprocess`` writes and training reads.

Layout of a store directory (format_version 1)::

    STORE/manifest.json
    STORE/contigs/000000.tokens.npy     genome: uint8 (length,) token ids, one file per contig
    STORE/contigs/000000.softmask.npy   genome: uint8 (ceil(length / 8),) soft-mask bits packed
                                        with np.packbits (bit 7 of byte 0 is base 0); absent when
                                        the contig has no lowercase base
    STORE/reads/tokens.npy              reads: uint8 (total bases,) every read concatenated
    STORE/reads/offsets.npy             reads: int64 (reads + 1,) read i = tokens[offsets[i]:offsets[i+1]]
    STORE/reads/names.txt               reads: one name per line, in store order

Token ids are the ``genossm.tokenize`` vocabulary (A C G T N MASK PAD = 0..6). Contig files are
numbered in input order, so any contig name (slashes, spaces) is safe.

``manifest.json`` keys: ``format`` ("genossm-token-store"), ``format_version``, ``kind``
("genome" or "reads"), ``tool`` and ``tool_version``, ``created`` (UTC), ``vocab``, ``sources``
(path, format, size in bytes, sha256 of each input file), ``options`` (how it was built),
``length`` (total bases), ``base_counts`` ({A, C, G, T, N}), ``n_fraction``, ``heldout``
({split: [[name, start, end], ...]}, 0-based half-open regions that training must not see), and
either ``contigs`` (genome: one entry per contig in input order with name, length, topology
"linear"/"circular", source index, tokens and softmask file names, base_counts, n_fraction,
softmasked base count) or ``reads`` (count, file names, and ``stats``: records seen, kept, and
dropped per filter reason).

Read access is :class:`TokenStore` (``TokenStore.open(path)``): windows are O(window) slices of
memory maps, with no parsing. Writes go to a temporary sibling directory renamed into place at
the end, so an interrupted build leaves no half store; an existing store at the output path is
replaced, any other existing path is refused.
"""

from genossm.store.build import build_store
from genossm.store.token_store import TokenStore
from genossm.store.writer import create_store

__all__ = ["TokenStore", "build_store", "create_store"]
