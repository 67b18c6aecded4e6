"""Short depthwise convolutions in (batch, L, channels) layout, both directions from one input.

The forward direction's conv is causal (looks at t-K+1..t), the reverse direction's anti-causal
(t..t+K-1, mirrored weights), so the reverse scan sees exactly what a forward conv would see on the
flipped sequence. A sum of K shifted, equally long slices of the padded input: no transposes, no
flipped copies, no in-place updates of slices (Inductor failed on those; torch.compile fuses this
form into one kernel).
``halo_left``/``halo_right`` (batch, K-1, channels) carry the neighbouring positions when a long
sequence is processed chunk by chunk (zeros at the sequence ends).
"""

import torch
import torch.nn.functional as F


def _shifted_sum(xpad, weight, bias, length):
    """b + sum_k w_k xpad[:, k:k+length], accumulated in the promoted dtype (float32 weights),
    returned in xpad's dtype. One output buffer, updated whole in place."""
    out = torch.addcmul(bias, xpad[:, :length], weight[:, 0])
    for k in range(1, weight.shape[1]):
        out.addcmul_(xpad[:, k:k + length], weight[:, k])
    return out.to(xpad.dtype)


def causal_conv(x, weight, bias, halo_left=None):
    """x (B, L, E), weight (E, K), bias (E,) -> (B, L, E) in x's dtype:
    out_t = b + sum_k w_k x_{t-K+1+k} (zeros before the start unless ``halo_left`` is given)."""
    halo = weight.shape[1] - 1
    xpad = F.pad(x, (0, 0, halo, 0)) if halo_left is None else torch.cat([halo_left, x], dim=1)
    return _shifted_sum(xpad, weight, bias, x.shape[1])


def anticausal_conv(x, weight, bias, halo_right=None):
    """x (B, L, E) -> (B, L, E): out_t = b + sum_k w_k x_{t+K-1-k} (the mirror of causal_conv)."""
    halo = weight.shape[1] - 1
    xpad = F.pad(x, (0, 0, 0, halo)) if halo_right is None else torch.cat([x, halo_right], dim=1)
    return _shifted_sum(xpad, weight.flip(1), bias, x.shape[1])


def bidirectional_conv(x, weight_f, bias_f, weight_r, bias_r):
    """(causal_conv(x, weight_f, bias_f), anticausal_conv(x, weight_r, bias_r)) from one copy of x
    padded on both sides, so that autograd keeps one padded copy for the two weight gradients."""
    halo, length = weight_f.shape[1] - 1, x.shape[1]
    xpad = F.pad(x, (0, 0, halo, halo))
    return (_shifted_sum(xpad[:, :length + halo], weight_f, bias_f, length),
            _shifted_sum(xpad[:, halo:], weight_r.flip(1), bias_r, length))
