"""Short depthwise convolutions in (batch, L, channels) layout, both directions from one input.

The forward direction's conv is causal (looks at t-K+1..t), the reverse direction's anti-causal
(t..t+K-1, mirrored weights), so the reverse scan sees exactly what a forward conv would see on the
flipped sequence. Shifted multiply-adds over the length axis: no transposes, no flipped copies.
``halo_left``/``halo_right`` (batch, K-1, channels) carry the neighbouring positions when a long
sequence is processed chunk by chunk (zeros at the sequence ends).
"""

import torch


def causal_conv(x, weight, bias, halo_left=None):
    """x (B, L, E), weight (E, K), bias (E,) -> (B, L, E): out_t = b + sum_k w_k x_{t-K+1+k}."""
    width = weight.shape[1]
    if halo_left is not None:
        x = torch.cat([halo_left, x], dim=1)
    length = x.shape[1] - (0 if halo_left is None else width - 1)
    offset = x.shape[1] - length
    out = x[:, offset:] * weight[:, width - 1] + bias
    for k in range(width - 1):
        shift = width - 1 - k
        lo = max(0, shift - offset)
        if lo < length:
            out[:, lo:] += x[:, offset + lo - shift: offset + length - shift] * weight[:, k]
    return out


def anticausal_conv(x, weight, bias, halo_right=None):
    """x (B, L, E) -> (B, L, E): out_t = b + sum_k w_k x_{t+K-1-k} (the mirror of causal_conv)."""
    width = weight.shape[1]
    length = x.shape[1]
    if halo_right is not None:
        x = torch.cat([x, halo_right], dim=1)
    avail = x.shape[1]
    out = x[:, :length] * weight[:, width - 1] + bias
    for k in range(width - 1):
        shift = width - 1 - k
        hi = min(length, avail - shift)
        if hi > 0:
            out[:, :hi] += x[:, shift: hi + shift] * weight[:, k]
    return out
