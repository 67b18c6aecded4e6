"""Flop estimates of the scan custom ops, registered with ``torch.utils.flop_counter``.

``FlopCounterMode`` reports them, and torch.compile's partitioner reads them when an activation
memory budget makes it choose what to recompute in backward: an op without a formula counts as
free there, so the scan, the most expensive op of a block, would be the first one recomputed.
Counts are per (batch, position, channel, state) element, one direction.
"""

import torch
from torch.utils.flop_counter import register_flop_formula

import genossm.kernels.scan.bidirectional  # noqa: F401  defines the ops registered below
import genossm.kernels.scan.op  # noqa: F401

FWD_FLOPS = 9  # decay exp(dt A), h = a h + dt B u, y += C h (mamba_ssm's accounting)
BWD_FLOPS = 23  # the state recompute (9) plus the adjoint step and the dA, dB, dC terms (14)


def _elements(u_shape, A_shape) -> int:
    batch, length, dim = u_shape
    return batch * length * dim * A_shape[1]


@register_flop_formula(torch.ops.genossm.selective_scan_fwd)
def _scan_fwd_flops(u, delta, A, *args, out_shape=None, **kwargs) -> int:
    return FWD_FLOPS * _elements(u, A)


@register_flop_formula(torch.ops.genossm.selective_scan_bwd)
def _scan_bwd_flops(dout, dfinal, u, delta, A, *args, out_shape=None, **kwargs) -> int:
    return BWD_FLOPS * _elements(u, A)


def _projection_flops(rows_shape, weight_shape) -> int:
    """One matmul of a projection fused into the op, (batch * L, in) @ (in, out) with the weight
    (out, in); 0 without one."""
    if weight_shape is None:
        return 0
    batch, length, _ = rows_shape
    return 2 * batch * length * weight_shape[0] * weight_shape[1]


@register_flop_formula(torch.ops.genossm.bidirectional_scan_fwd)
def _bidir_fwd_flops(u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r, D_r,
                     bias_r, z, out_weight, dt_weight_f, dt_weight_r, *args, out_shape=None,
                     **kwargs) -> int:
    return (2 * FWD_FLOPS * _elements(u_f, A_f) + _projection_flops(u_f, out_weight)
            + _projection_flops(delta_f, dt_weight_f) + _projection_flops(delta_r, dt_weight_r))


@register_flop_formula(torch.ops.genossm.bidirectional_scan_bwd)
def _bidir_bwd_flops(dout, u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r,
                     D_r, bias_r, z, out_weight, dt_weight_f, dt_weight_r, *args, out_shape=None,
                     **kwargs) -> int:
    # out projection: weight gradient and the gated output's gradient, made twice (before the
    # scans for dy, after them for dz); dt projections: remade, then weight and input gradients
    return (2 * BWD_FLOPS * _elements(u_f, A_f) + 3 * _projection_flops(u_f, out_weight)
            + 3 * _projection_flops(delta_f, dt_weight_f)
            + 3 * _projection_flops(delta_r, dt_weight_r))
