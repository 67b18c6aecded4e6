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

import math

import torch

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
                yield index, name, direction, direction.dt_from_delta(delta)
            hidden = layer(hidden)


def horizons_from_dt(direction, mean_dt: torch.Tensor) -> torch.Tensor:
    """(E,) each channel's memory horizon in bases from its mean dt (E,): 1 / (mean dt x slowest
    |A|), the distance over which it keeps 1/e of its state."""
    A, _, _ = direction.scan_params()
    return 1 / (mean_dt.double() * A.abs().min(dim=1).values.double())


def calibration_positions(quantile: float, tail: int = 32) -> int:
    """How many calibration positions resolve ``quantile``: ``tail`` of them above it per channel."""
    return math.ceil(tail / (1 - quantile))


@torch.inference_mode()
def calibrate_dt_filter(model, ids: torch.Tensor, quantile: float = 0.9, min_horizon: float | None = None,
                        dtype=None, positions_per_pass: int = 1 << 20) -> list[dict]:
    """Set the dt filter of every scan of ``model`` from the sequences ``ids`` (B, L) (on the
    model's device, or on the host and moved over ``positions_per_pass`` at a time): channels whose
    horizon is at least ``min_horizon`` bases (default L) drop the positions where their dt is
    below its ``quantile`` over ``ids``. Only each channel's largest dts are kept between passes,
    so B x L can be far larger than one pass. Returns, per layer and direction, how many channels
    are filtered."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    positions = ids.shape[0] * ids.shape[1]
    keep = positions - round(quantile * (positions - 1))  # the threshold is the keep-th largest dt
    if keep < 2:
        raise ValueError(f"quantile {quantile:g} needs more calibration positions than the {positions:,} "
                         f"given: at least {calibration_positions(quantile, 2):,}")
    clear_dt_filter(model)
    min_horizon = ids.shape[1] if min_horizon is None else min_horizon
    device = next(model.parameters()).device
    rows = max(1, positions_per_pass // ids.shape[1])
    largest, dt_sums, scans = {}, {}, {}
    for first in range(0, ids.shape[0], rows):
        for index, name, direction, dt in channel_dts(model, ids[first:first + rows].to(device), dtype):
            flat = dt.reshape(-1, dt.shape[-1])  # (b * L, E)
            if (index, name) in largest:
                flat = torch.cat([largest[index, name], flat])
            largest[index, name] = flat.topk(min(keep, flat.shape[0]), dim=0).values  # (keep, E)
            dt_sums[index, name] = dt_sums.get((index, name), 0) + dt.sum(dim=(0, 1), dtype=torch.float64)
            scans[index, name] = direction
    summary = []
    for (index, name), direction in scans.items():  # set after the passes: calibration sees the plain model
        filtered = horizons_from_dt(direction, dt_sums[index, name] / positions) >= min_horizon
        level = largest[index, name][-1]  # (E,)
        direction.dt_threshold = torch.where(filtered, level, torch.zeros_like(level))
        summary.append({"layer": index, "direction": name, "filtered_channels": int(filtered.sum()),
                        "channels": int(filtered.numel())})
    return summary


def clear_dt_filter(model):
    for layer in model.layers:
        layer.mixer.fwd.dt_threshold = None
        layer.mixer.rev.dt_threshold = None
