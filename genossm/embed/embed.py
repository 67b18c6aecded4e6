"""``genossm embed`` as a library function: embed BED regions or variants and write parquet."""

from pathlib import Path

import torch

from genossm import __version__
from genossm.embed.output import check_output, write_embeddings
from genossm.embed.regions import embed_regions
from genossm.embed.variants import embed_variants
from genossm.errors import GenossmError
from genossm.score.passes import is_global_zero, load_model, resolve_device


def embed(model, reference, output, *, bed=None, variants=None, pool: str = "mean", layer: int = -1,
          context=None, compile: bool = False, **options):
    """Embed the regions of ``bed`` or the variants of ``variants`` (exactly one) into ``output``.

    See :func:`embed_regions` and :func:`embed_variants` for the tables. ``compile``: as in
    :func:`genossm.score.predict`. Returns the table; with ``devices > 1`` only rank 0 writes.
    """
    if (bed is None) == (variants is None):
        raise GenossmError("give exactly one of a BED file (-b) or a VCF (--variants)")
    check_output(output)
    options["device"] = resolve_device(options.get("device"))
    model_path = None if isinstance(model, torch.nn.Module) else model
    model = load_model(model)
    if compile:
        model.compile_blocks()
    if bed is not None:
        frame = embed_regions(model, reference, bed, pool=pool, layer=layer, context=context, **options)
    else:
        frame = embed_variants(model, reference, variants, pool=pool, layer=layer, context=context, **options)
    if is_global_zero():
        reference_name = Path(str(getattr(reference, "path", reference))).name
        meta = {"version": __version__, "model": model_path or "in-memory", "reference": reference_name,
                "pool": pool, "layer": layer, "context": context or ""}
        write_embeddings(frame, output, meta)
    return frame
