"""Embeddings of the ref and alt haplotypes around each variant (``genossm embed --variants``).

Per ALT: the window of ``context`` bases centred on the left-normalized variant (as
``genossm predict`` builds it, see :mod:`genossm.score.variants`), run unmasked for the ref and
the alt haplotype on both strands; ``hidden_states[layer]`` averaged over the variant's span
+- ``radius`` bases (``pool="mean"``) or taken at the span's first base (``pool="center"``),
then over the strands. The cosine distance of these two vectors at the last layer with mean
pooling is the ``cosine_distance`` score of ``genossm predict``.
"""

import numpy as np
import pandas as pd

from genossm.embed.regions import check_layer, embedding_columns
from genossm.errors import GenossmError
from genossm.score.alleles import prepare_alleles
from genossm.score.passes import MAX_WINDOW, PassIndex, load_model, run_passes
from genossm.score.variants import (
    COLUMNS, log_status_summary, open_variants, site_embedding_passes, site_embeddings,
)


def embed_variants(model, reference, vcf, *, pool: str = "mean", layer: int = -1, context=None, radius: int = 64,
                   skip_unknown_contigs: bool = False, threads: int = 0, batch_size=None, device=None,
                   devices: int = 1, precision: str = "auto", progress: bool = True,
                   max_window: int | None = MAX_WINDOW) -> pd.DataFrame:
    """One row per ALT of ``vcf``, input order: chrom, pos, ref, alt, id, status, then
    ref_emb_0 .. ref_emb_{d-1} and alt_emb_0 .. alt_emb_{d-1} (float32, NaN unless ok).

    Contigs and statuses as in :func:`genossm.score.score_vcf`; ``context`` defaults to the
    model's ``context_length``.
    """
    if pool not in ("mean", "center"):
        raise GenossmError(f"variant embeddings pool 'mean' or 'center', not {pool!r}")
    model = load_model(model)
    layer = check_layer(model, layer)
    variants, genome, mapping = open_variants(reference, vcf, skip_unknown_contigs=skip_unknown_contigs,
                                              threads=threads)
    context = int(context or model.config.context_length)
    statuses, alleles = prepare_alleles(variants.table, genome, mapping, context)
    ok = sorted((i for i, allele in enumerate(alleles) if allele is not None), key=lambda i: (alleles[i].contig, i))
    index = PassIndex()
    plans = [site_embedding_passes(alleles[i], index, radius, layer, center=pool == "center") for i in ok]
    outputs = run_passes(model, genome, index.passes, batch_size=batch_size, device=device, devices=devices,
                         precision=precision, progress=progress, desc="embedding", max_window=max_window)
    d = model.config.d_model
    ref = np.full((len(alleles), d), np.nan, dtype=np.float32)
    alt = np.full((len(alleles), d), np.nan, dtype=np.float32)
    for i, plan in zip(ok, plans):
        ref[i], alt[i] = site_embeddings(plan, outputs)
    frame = variants.table.reindex(columns=list(COLUMNS)).copy()
    frame["status"] = statuses
    log_status_summary(statuses, vcf)
    return pd.concat([
        frame,
        pd.DataFrame(ref, columns=embedding_columns(d, "ref_emb_")),
        pd.DataFrame(alt, columns=embedding_columns(d, "alt_emb_")),
    ], axis=1)
