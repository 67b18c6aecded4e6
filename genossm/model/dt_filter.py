"""Inference-time dt filtering for windows far longer than training (after LongMamba, Ye et al. 2025).

A scan channel whose memory spans the training window keeps adding every position's input
dt_t B_t u_t to its state. Over a window 100x longer than any training window, the many small
writes of positions the channel was never meant to keep add up (like a random walk, ~ sqrt of the
distance) and drown the few large writes it was keeping. The filter sets dt to 0 (no decay and no
write) wherever such a long-memory channel's dt is below a threshold, its ``quantile`` over
calibration sequence; channels with shorter memory are left as trained.

Calibration needs only unlabelled sequence of about the training length; it changes no parameter
and is not saved with the model (a buffer per scan direction, ``dt_threshold``).
"""

import torch
import torch.nn.functional as F

DIRECTION_NAMES = ("forward", "reverse")


def channel_dts(model, ids: torch.Tensor, dtype=None):
    """Each scan's dt over the sequences ``ids`` (B, L), as the scan computes it (the dt filter
    included, when set), under autocast to ``dtype`` when given. Yields (layer index, direction
    name, ScanDirection, dt (B, L, E) float32) in layer order. RC-equivariant models: the forward
    strand's stream."""
    with torch.autocast(ids.device.type, dtype=dtype, enabled=dtype is not None):
        hidden = model.embedding(ids.long())  # (B, L, W)
        for index, layer in enumerate(model.layers):
            mixer = layer.mixer
            x = mixer.x_projection(layer.norm(hidden))  # (B, L, E)
            for name, direction, u in zip(DIRECTION_NAMES, (mixer.fwd, mixer.rev), mixer.conv_inputs(x)):
                delta, _, _ = direction.scan_inputs(u)
                yield index, name, direction, F.softplus(delta.float() + direction.dt_proj.bias.float())
            hidden = layer(hidden)


def horizons_from_dt(direction, dt: torch.Tensor) -> torch.Tensor:
    """(E,) each channel's memory horizon in bases over ``dt`` (B, L, E): 1 / (mean dt x slowest
    |A|), the distance over which it keeps 1/e of its state."""
    A, _, _ = direction.scan_params()
    return 1 / (dt.mean(dim=(0, 1)).double() * A.abs().min(dim=1).values.double())


@torch.inference_mode()
def calibrate_dt_filter(model, ids: torch.Tensor, quantile: float = 0.9, min_horizon: float | None = None,
                        dtype=None) -> list[dict]:
    """Set the dt filter of every scan of ``model`` from the sequences ``ids`` (B, L) on the
    model's device: channels whose horizon is at least ``min_horizon`` bases (default L) drop the
    positions where their dt is below its ``quantile`` over ``ids``. Returns, per layer and
    direction, how many channels are filtered."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    clear_dt_filter(model)
    min_horizon = ids.shape[1] if min_horizon is None else min_horizon
    thresholds, summary = [], []
    for index, name, direction, dt in channel_dts(model, ids, dtype):
        flat = dt.reshape(-1, dt.shape[-1])  # (B * L, E)
        level = flat.sort(dim=0).values[round(quantile * (flat.shape[0] - 1))]  # (E,)
        filtered = horizons_from_dt(direction, dt) >= min_horizon
        thresholds.append((direction, torch.where(filtered, level, torch.zeros_like(level))))
        summary.append({"layer": index, "direction": name, "filtered_channels": int(filtered.sum()),
                        "channels": int(filtered.numel())})
    for direction, threshold in thresholds:  # set after the pass: calibration sees the plain model
        direction.dt_threshold = threshold
    return summary


def clear_dt_filter(model):
    for layer in model.layers:
        layer.mixer.fwd.dt_threshold = None
        layer.mixer.rev.dt_threshold = None
