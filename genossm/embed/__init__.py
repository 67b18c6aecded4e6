"""Embeddings from a genossm model as pandas DataFrames: library functions behind ``genossm embed``.

Notebook use::

    from genossm.embed import embed_regions
    frame = embed_regions("model_dir", "ref.fa", "regions.bed")   # chrom, start, end, name, emb_*

See :mod:`genossm.embed.regions` (BED regions, pooling, strands) and
:mod:`genossm.embed.variants` (ref/alt embeddings around variants).
"""

from genossm.embed.embed import embed
from genossm.embed.output import write_embeddings
from genossm.embed.regions import POOLS, embed_regions
from genossm.embed.variants import embed_variants

__all__ = ["POOLS", "embed", "embed_regions", "embed_variants", "write_embeddings"]
