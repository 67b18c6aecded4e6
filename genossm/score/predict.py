"""``genossm predict`` as a library function: score a VCF/BCF and write the scores."""

from pathlib import Path

import torch

from genossm import __version__
from genossm.score.output import output_format, write_scores
from genossm.score.passes import is_global_zero, load_model, resolve_device
from genossm.score.variants import DEFAULT_SCORES, score_vcf


def predict(model, reference, vcf, output, *, fmt=None, scores=DEFAULT_SCORES, context=None, threads: int = 0,
            skip_unknown_contigs: bool = False, compile: bool = False, **options):
    """Score every ALT of ``vcf`` on ``reference`` and write ``output`` (see :func:`write_scores`).

    ``compile``: torch.compile the model's blocks in place (:meth:`GenoSSM.compile_blocks`): about
    a minute per window length, then about 2x faster on a GPU. Other options (device, devices,
    precision, batch_size, radius, max_window, progress) as in :func:`genossm.score.score_table`.
    Returns the score table; with ``devices > 1`` every rank scores and returns it, and only rank 0 writes.
    """
    fmt = output_format(output, fmt)  # a bad output name or device fails before any work
    options["device"] = resolve_device(options.get("device"))
    model_path = None if isinstance(model, torch.nn.Module) else model
    model = load_model(model)
    if compile:
        model.compile_blocks()
    context = int(context or model.config.context_length)
    table = score_vcf(model, reference, vcf, scores=scores, context=context, threads=threads,
                      skip_unknown_contigs=skip_unknown_contigs, **options)
    if is_global_zero():
        reference_name = Path(str(getattr(reference, "path", reference))).name
        meta = [("genossm_predict", f"version={__version__};model={model_path or 'in-memory'};"
                 f"reference={reference_name};context={context};scores={','.join(scores)}")]
        write_scores(table, output, fmt=fmt, vcf=vcf, meta=meta, threads=threads)
    return table
