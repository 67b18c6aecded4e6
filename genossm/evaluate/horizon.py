"""Memory horizons: how far each scan channel of a model carries what it holds.

At each position t, channel d of one scan direction multiplies its state n by exp(-dt_t |A[d, n]|),
so across a stretch of typical sequence it keeps exp(-distance / horizon) of its state, with

    horizon[d] = 1 / (mean_t dt_t[d] * min_n |A[d, n]|)  bases (its slowest state).

What was written ``distance`` bases away can reach a query only through channels whose horizon is
of that order or longer (more input at small dt only adds to the forgetting). For the recall
evaluation this separates two reasons a model trained on 8 kb fails at 1M: no channel of a layer
reaching 1M (state decay), or channels that do reach it but hold the wrong thing.
"""

import numpy as np
import torch

from genossm.model.dt_filter import channel_dts, horizons_from_dt


@torch.inference_mode()
def memory_horizons(model, ids: torch.Tensor, dtype=None) -> list[dict]:
    """Every channel's horizon in bases over the sequences ``ids`` (B, L) (on the model's device),
    per layer and scan direction, in layer order: [{"layer", "direction", "horizons": (E,) numpy
    float64}]. dt is computed as the scan computes it (``genossm.model.dt_filter.channel_dts``: the
    dt filter included, when set), under autocast to ``dtype`` when given."""
    return [{"layer": index, "direction": name, "horizons": horizons_from_dt(direction, dt.mean(dim=(0, 1))).cpu().numpy()}
            for index, name, direction, dt in channel_dts(model, ids, dtype)]


def horizon_summary(horizons: list[dict], lengths) -> list[dict]:
    """JSON-ready per layer and direction: the longest and median horizon and how many channels
    reach each of ``lengths``."""
    return [{"layer": h["layer"], "direction": h["direction"], "longest": float(h["horizons"].max()),
             "median": float(np.median(h["horizons"])),
             "channels_reaching": {str(length): int((h["horizons"] >= length).sum()) for length in lengths}}
            for h in horizons]
