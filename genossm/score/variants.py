"""Variant-effect scores from a genossm model, one row per ALT allele, input order kept.

Scores (natural-log units; NaN unless status is ``ok``):

``llr`` (default): log-likelihood ratio of the ALT vs the REF haplotype, averaged over the
forward and reverse-complement strands. For each ALT, the minimal left-normalized edit replaces
reference bases [p, p + r) by alt bases (r or a may be 0) and the *span* is m = max(r, a)
positions starting at p. Ref and alt haplotype windows of the same length L start at the same
reference position, centred on the span; the m span positions are masked in both, and

    llr = sum_i log P(alt_hap[p+i] | alt window, span masked) - sum_i log P(ref_hap[p+i] | ref window, span masked)

over i < m, with log-probabilities renormalized over A, C, G, T. Both sums run over the same
number of positions (a deletion's alt span reads the bases that moved up; an insertion's ref
span the bases it pushes down), so length alone does not favour either allele; a span position
where either haplotype's base is not A/C/G/T (N, or past a linear contig end) counts in neither
sum (deleting a linear contig's last bases scores 0: nothing is left to compare). For an SNV
(m = 1) this is exactly the masked-marginal score log p(alt) - log p(ref) at the masked site,
and one forward pass per strand and position serves every ALT there; an MNV is the same with
its m bases masked together (ref and alt share the masked window). Indels take two passes per
strand (the ref pass is shared by all ALTs with the same span).

``cosine_distance`` (opt-in, two unmasked passes per strand per ALT): 1 - cosine similarity of
the ref and alt embeddings, each the last-layer hidden state averaged over the span and
``radius`` bases either side (clipped to the window), then over the two strands.

Windows: L = ``context`` (default: the model's ``context_length``), capped at twice the contig
length (linear) or the contig length (circular); centred on the span; positions past a linear
contig end are PAD (the window is not shifted), circular contigs wrap around.
"""

import logging
from collections import Counter

import numpy as np
import pandas as pd

from genossm.errors import GenossmError
from genossm.score.alleles import STATUSES, prepare_alleles
from genossm.score.genome import Genome, centred_start
from genossm.score.passes import MAX_WINDOW, Pass, PassIndex, load_model, run_passes

log = logging.getLogger(__name__)

SCORES = {
    "llr": "log-likelihood ratio alt vs ref (natural log), forward/reverse-complement average: "
    "SNVs masked-marginal log p(alt) - log p(ref); indels/MNVs masked-span haplotype log-likelihood difference",
    "cosine_distance": "cosine distance of ref vs alt last-layer embeddings around the variant "
    "(span +- radius bases), forward/reverse-complement average",
}
DEFAULT_SCORES = ("llr",)
COLUMNS = ("chrom", "pos", "ref", "alt", "id")


def score_table(model, genome: Genome, table, *, contig_map=None, context=None, scores=DEFAULT_SCORES,
                radius: int = 64, batch_size=None, device=None, devices: int = 1, precision: str = "auto",
                progress: bool = True, max_window: int | None = MAX_WINDOW) -> pd.DataFrame:
    """Score the ALT rows of ``table`` (columns chrom, pos 1-based, ref, alt[, id]).

    Returns a DataFrame in the same row order: chrom, pos, ref, alt, id, one column per score
    (float32, NaN unless ok), status. ``contig_map`` maps chrom -> reference contig name (None:
    unknown); by default names are used as they are. ``model`` is a GenoSSM or a model path;
    ``genome`` a :class:`Genome` or anything :meth:`Genome.open` takes. Windows longer than
    ``max_window`` (a ``context`` past it) run chunk by chunk (:func:`genossm.score.passes.run_passes`).
    """
    unknown = set(scores) - set(SCORES)
    if unknown:
        raise GenossmError(f"unknown score(s) {sorted(unknown)}; choose from {list(SCORES)}")
    model = load_model(model)
    genome = Genome.open(genome)
    context = int(context or model.config.context_length)
    if contig_map is None:
        contig_map = {name: (name if name in genome.lengths else None) for name in table["chrom"].unique()}
    statuses, alleles = prepare_alleles(table, genome, contig_map, context)
    # contig by contig: the genome keeps only the last contigs it loaded
    ok = sorted((i for i, allele in enumerate(alleles) if allele is not None), key=lambda i: (alleles[i].contig, i))
    # An RC-equivariant model's logits on the reverse complement mirror its forward logits
    # exactly: the reverse strand would repeat the forward llr.
    strands = (1,) if getattr(model.config, "rc_equivariant", False) else (1, -1)

    index = PassIndex()
    planners = {
        "llr": lambda allele: llr_passes(allele, index, strands),
        "cosine_distance": lambda allele: site_embedding_passes(allele, index, radius),
    }
    plans = {name: [planners[name](alleles[i]) for i in ok] for name in scores}
    outputs = run_passes(model, genome, index.passes, batch_size=batch_size, device=device,
                         devices=devices, precision=precision, progress=progress, desc="scoring",
                         max_window=max_window)

    out = table.reindex(columns=list(COLUMNS)).copy()
    for name in scores:
        column = np.full(len(table), np.nan, dtype=np.float32)
        for i, plan in zip(ok, plans[name]):
            column[i] = _REDUCE[name](genome, alleles[i], plan, outputs)
        out[name] = column
    out["status"] = statuses
    return out


def _geometry(allele):
    """(window start, offset of the span in the window) for the window centred on the span."""
    start = centred_start(allele.p, allele.span, allele.window)
    return start, allele.p - start


def _edit(allele):
    return (allele.p, len(allele.ref), allele.alt.tobytes())


def llr_passes(allele, index: PassIndex, strands=(1, -1)):
    """Per strand, the (ref, alt) masked passes of the ``llr`` score (indices into ``index``)."""
    start, offset = _geometry(allele)
    read, mask = ("logp", offset, allele.span), (offset, allele.span)
    pairs = []
    for strand in strands:
        ref = index.add(Pass(allele.contig, start, allele.window, None, mask, strand, read))
        # Same-length edits: the masked ref window is the masked alt window.
        same = len(allele.ref) == len(allele.alt)
        alt = ref if same else index.add(Pass(allele.contig, start, allele.window, _edit(allele), mask, strand, read))
        pairs.append((ref, alt))
    return pairs


def site_embedding_passes(allele, index: PassIndex, radius: int = 64, layer: int = -1, center: bool = False):
    """Per strand, the (ref, alt) unmasked passes that embed the site: ``hidden_states[layer]``
    averaged over the span +- ``radius`` (clipped to the window), or at the span's first base
    with ``center``. Both strands always: an RC-equivariant model's embeddings are
    channel-permuted across strands, not equal.
    """
    start, offset = _geometry(allele)
    if center:
        read = ("mean", offset, 1, layer)
    else:
        lo, hi = max(0, offset - radius), min(allele.window, offset + allele.span + radius)
        read = ("mean", lo, hi - lo, layer)
    return [
        (index.add(Pass(allele.contig, start, allele.window, None, None, strand, read)),
         index.add(Pass(allele.contig, start, allele.window, _edit(allele), None, strand, read)))
        for strand in (1, -1)
    ]


def site_embeddings(plan, outputs):
    """(ref, alt) embeddings of a site, averaged over strands (float64)."""
    ref = np.mean([outputs[r] for r, _ in plan], axis=0, dtype=np.float64)
    alt = np.mean([outputs[a] for _, a in plan], axis=0, dtype=np.float64)
    return ref, alt


def _llr(genome, allele, plan, outputs) -> float:
    span = allele.span
    ref_bases = genome.haplotype(allele.contig, allele.p, span)
    alt_bases = genome.haplotype(allele.contig, allele.p, span, _edit(allele))
    # a span position counts in both sums or in neither: where either haplotype reads N or PAD
    # (past a linear contig end), a one-sided term would score the missing base, not the edit
    keep = np.flatnonzero((ref_bases < 4) & (alt_bases < 4))
    total = 0.0
    for ref, alt in plan:
        total += _sum_logp(outputs[alt], alt_bases, keep) - _sum_logp(outputs[ref], ref_bases, keep)
    return total / len(plan)


def _sum_logp(logp: np.ndarray, bases: np.ndarray, keep: np.ndarray) -> float:
    return float(logp[keep, bases[keep]].sum(dtype=np.float64))


def _cosine_distance(genome, allele, plan, outputs) -> float:
    ref, alt = site_embeddings(plan, outputs)
    norm = np.linalg.norm(ref) * np.linalg.norm(alt)
    return float(1.0 - ref @ alt / norm) if norm > 0 else float("nan")


_REDUCE = {"llr": _llr, "cosine_distance": _cosine_distance}


def status_summary(statuses) -> str:
    """One line: how many ALT rows got each status."""
    counts = Counter(statuses)
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    return f"{sum(counts.values())} ALT alleles: " + (", ".join(parts) if parts else "none")


def log_status_summary(statuses, path) -> str:
    """Log the status counts on stderr: a warning when any ALT was not scored."""
    summary = status_summary(statuses)
    (log.warning if any(s != "ok" for s in statuses) else log.info)("%s: %s", path, summary)
    return summary


def open_variants(reference, vcf, *, skip_unknown_contigs: bool = False, threads: int = 0):
    """Read a VCF/BCF and match it to a reference: ``(VcfVariants, Genome, contig map)``.

    VCF contig names are matched to the reference (``chr1`` <-> ``1`` when unambiguous); header
    contig lengths that disagree with the reference are warned about on stderr. Contigs missing
    from the reference are an error unless ``skip_unknown_contigs`` (they map to None).
    """
    from genossm.io.vcf import check_contig_lengths, match_contigs, read_variants

    variants = read_variants(vcf, threads=threads)
    genome = Genome.open(reference)
    chroms = list(variants.table["chrom"].unique())
    mapping = match_contigs(list(variants.header_contigs) + chroms, genome.names)
    check_contig_lengths(variants.header_contigs, mapping, genome.lengths, path=vcf)
    for name in chroms:
        if mapping[name] not in (None, name):
            log.info("VCF contig %r matched to reference contig %r", name, mapping[name])
    missing = [name for name in chroms if mapping[name] is None]
    if missing and not skip_unknown_contigs:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise GenossmError(
            f"contig {missing[0]!r}{more} is not in the reference {genome.path}; "
            "use --skip-unknown-contigs (skip_unknown_contigs=True) to score the rest",
            path=vcf,
        )
    return variants, genome, mapping


def score_vcf(model, reference, vcf, *, skip_unknown_contigs: bool = False, threads: int = 0,
              **options) -> pd.DataFrame:
    """Score every ALT of a VCF/BCF against a reference (FASTA path, token store or Reference).

    Contigs as in :func:`open_variants` (ALTs on skipped unknown contigs get status
    ``unknown_contig``); other options as in :func:`score_table`. Status counts are logged.
    """
    variants, genome, mapping = open_variants(reference, vcf, skip_unknown_contigs=skip_unknown_contigs,
                                              threads=threads)
    result = score_table(model, genome, variants.table, contig_map=mapping, **options)
    log_status_summary(result["status"], vcf)
    return result
