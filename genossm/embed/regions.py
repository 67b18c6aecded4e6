"""Embeddings of BED regions: one row per region (or per base with ``pool="none"``).

Each region is embedded inside a window of ``max(context, region length)`` bases centred on it
(``context`` None: the region alone); past a linear contig end the window is PAD, circular
contigs wrap. The model runs on the window and on its reverse complement; the per-base hidden
states of ``hidden_states[layer]`` (0: the embedding layer, -1 / n_layer: the last block after
the final norm) from the two strands, mapped back onto the same bases, are averaged. A region on
the ``-`` strand is the reverse complement of its bases: its per-base rows run 5'->3' on the
minus strand, its centre base is counted from that end and its window is mirrored, so it equals
the ``+`` region of a reverse-complemented reference exactly.

Pooling: ``mean`` over the region's bases; ``center``: the base at index ``length // 2`` from the
region's 5' end; ``none``: one row per base (long format with a ``pos`` column, 0-based).
A window longer than ``max_window`` bases (a whole chromosome, say) is run chunk by chunk with
flat device memory (``genossm.score.passes.run_long_pass``); host memory grows as window x d_model.
"""

import numpy as np
import pandas as pd

from genossm.errors import GenossmError
from genossm.score.genome import Genome
from genossm.score.passes import MAX_WINDOW, Pass, PassIndex, load_model, run_passes

POOLS = ("mean", "center", "none")


def embedding_columns(d_model: int, prefix: str = "emb_") -> list:
    return [f"{prefix}{k}" for k in range(d_model)]


def check_layer(model, layer: int) -> int:
    """``layer`` as an index into hidden_states (n_layer + 1 entries), negative counts from the end."""
    n = model.config.n_layer + 1
    if not -n <= layer < n:
        raise GenossmError(f"layer {layer} out of range: the model has hidden states 0..{n - 1} (or -1 for the last)")
    return layer % n


def _region_passes(region, contig, context, index: PassIndex, pool, layer):
    size = region.end - region.start
    window = max(size, int(context or 0))
    extra = window - size
    minus = region.strand == "-"
    before = extra - extra // 2 if minus else extra // 2  # mirrored on '-' so RC(reference) gives the same
    start = region.start - before
    if pool == "mean":
        read = ("mean", before, size, layer)
    elif pool == "center":
        k = size // 2
        read = ("mean", before + (size - 1 - k if minus else k), 1, layer)
    else:
        read = ("full", before, size, layer)
    return [index.add(Pass(contig, start, window, None, None, strand, read)) for strand in (1, -1)]


def embed_regions(model, reference, regions, *, pool: str = "mean", layer: int = -1, context=None,
                  batch_size=None, device=None, devices: int = 1, precision: str = "auto",
                  progress: bool = True, max_window: int | None = MAX_WINDOW) -> pd.DataFrame:
    """Embed ``regions`` (a BED path or :class:`genossm.io.bed.BedRegion` list) on ``reference``.

    Returns a DataFrame: chrom, start, end (0-based half-open, as in the BED), name, then
    emb_0 .. emb_{d-1} (float32); with ``pool="none"`` also ``pos`` (0-based) before the
    embeddings and one row per base. Region order is kept. BED contig names are matched to the
    reference as VCF ones are (``chr1`` <-> ``1`` when unambiguous).
    """
    if pool not in POOLS:
        raise GenossmError(f"unknown pool {pool!r}; choose from {', '.join(POOLS)}")
    model = load_model(model)
    layer = check_layer(model, layer)
    genome = Genome.open(reference)
    regions, contigs = _resolve_regions(regions, genome)
    index = PassIndex()
    plans = []
    for region, contig in zip(regions, contigs):
        plans.append(_region_passes(region, contig, context, index, pool, layer))
    outputs = run_passes(model, genome, index.passes, batch_size=batch_size, device=device, devices=devices,
                         precision=precision, progress=progress, desc="embedding", max_window=max_window)
    columns = embedding_columns(model.config.d_model)
    emb = [np.mean([outputs[i] for i in plan], axis=0, dtype=np.float32) for plan in plans]
    if pool != "none":
        frame = _region_frame(regions)
        values = np.stack(emb) if emb else np.zeros((0, len(columns)), np.float32)
        return pd.concat([frame, pd.DataFrame(values, columns=columns)], axis=1)
    # Long format: one row per base, 5'->3' on the region's strand.
    per_base = [e[::-1] if r.strand == "-" else e for r, e in zip(regions, emb)]
    sizes = [r.end - r.start for r in regions]
    frame = _region_frame(regions).loc[np.repeat(np.arange(len(regions)), sizes)].reset_index(drop=True)
    frame["pos"] = np.concatenate(
        [np.arange(r.end - 1, r.start - 1, -1) if r.strand == "-" else np.arange(r.start, r.end) for r in regions]
    ) if regions else np.zeros(0, np.int64)
    values = np.concatenate(per_base) if per_base else np.zeros((0, len(columns)), np.float32)
    return pd.concat([frame, pd.DataFrame(values, columns=columns)], axis=1)


def _region_frame(regions) -> pd.DataFrame:
    return pd.DataFrame({
        "chrom": pd.Series([r.chrom for r in regions], dtype=object),
        "start": np.asarray([r.start for r in regions], dtype=np.int64),
        "end": np.asarray([r.end for r in regions], dtype=np.int64),
        "name": pd.Series([r.name for r in regions], dtype=object),
    })


def _resolve_regions(regions, genome: Genome):
    """(regions, reference contig of each) from a BED path or a region list, checked."""
    from genossm.io.bed import read_bed
    from genossm.io.vcf import match_contigs

    path = None
    if not isinstance(regions, (list, tuple)):
        path = regions
        regions = read_bed(path, nonempty=True)
    mapping = match_contigs([r.chrom for r in regions], genome.names)
    if path is not None:
        # Read again with each BED contig's length: unknown contigs and ends past a contig end
        # are then errors naming the BED line.
        lengths = {name: genome.lengths[target] for name, target in mapping.items() if target is not None}
        regions = read_bed(path, lengths=lengths)
    for region in regions:
        target = mapping[region.chrom]
        if target is None or region.end > genome.lengths[target] or region.end <= region.start:
            problem = (
                f"contig not in the reference {genome.path}" if target is None
                else f"empty region (start {region.start}, end {region.end}, 0-based half-open)"
                if region.end <= region.start
                else f"end past the contig end ({genome.lengths[target]})"
            )
            raise GenossmError(f"region {region}: {problem}", path=path)
    return list(regions), [mapping[r.chrom] for r in regions]
