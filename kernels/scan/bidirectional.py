"""Fused bidirectional selective scan for the model's mixer.

    out = (scan(u_f, ...) + scan_reverse(u_r, ...)) * silu(z)

Each direction has its own u (its conv output), delta, A, B, C, D and delta_bias; both share the
gate z. On the Triton path the forward direction writes its y in float32, the reverse direction
adds it, gates, and writes one output: no flipped copies, one gate, one output tensor. Backward
computes the gate gradient once and runs both directions' adjoint kernels on the same dy.

With ``out_weight`` the op also applies the mixer's output projection, ``out @ out_weight.T``, so
that the gated output need not be kept for backward: backward recomputes it from the pre-gate sum
and z (which the gate's backward keeps anyway) for the weight gradient and frees it before the
scans' backward, the peak of a block's backward. With ``dt_weight_f``/``dt_weight_r`` (D, R) the
op also applies each direction's dt projection: delta_* are then its low-rank (batch, L, R) inputs
and delta = delta_* @ dt_weight_*.T, made inside the op for one direction at a time and never kept
(backward remakes it, and reduces its gradient to the low-rank input and the weight as soon as
that direction's scan is done). The gate's dz is computed after both scans, from the gated
output's gradient (the op's output gradient, or that times out_weight again). Together: at the
peak of a block's backward, 3 x (batch, L, D) less than with delta, dz and the first direction's
ddelta all held (3 GiB per million positions in bfloat16 for the reference model).
"""

from typing import Optional

import torch
import torch.nn.functional as F

from genossm.kernels.scan.op import (
    _block_sizes,
    _scan_backward,
    _scan_forward,
    check_chunk,
    check_shapes,
    default_chunk_size,
    gate_backward,
    gate_forward,
    use_triton,
)
from genossm.kernels.scan.reference import selective_scan_ref


def _delta(delta: torch.Tensor, dt_weight: Optional[torch.Tensor]) -> torch.Tensor:
    """The scan's delta (batch, L, D): ``delta`` itself, or its dt projection when the op was
    given the direction's dt_weight (D, R)."""
    return delta if dt_weight is None else F.linear(delta, dt_weight.to(delta.dtype))


def _check_inputs(u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r, D_r,
                  bias_r, z, dt_weight_f, dt_weight_r):
    """Each direction's shapes as ``selective_scan`` checks them (delta_*: (batch, L, R) with
    dt_weight_* (D, R)), both directions and the shared z of u_f's shape: a ValueError naming the
    first input of another shape, which the kernels would read out of bounds."""
    if u_f.dim() != 3:
        raise ValueError(f"u_f must be (batch, L, D), got {tuple(u_f.shape)}")
    batch, length, dim = u_f.shape
    named = [("z", z, u_f.shape)]
    for s, u, delta, A, B, C, D, bias, dt_weight in (
            ("_f", u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, dt_weight_f),
            ("_r", u_r, delta_r, A_r, B_r, C_r, D_r, bias_r, dt_weight_r)):
        nstate, width = A.shape[-1], dim if dt_weight is None else delta.shape[-1]
        named += [(f"u{s}", u, u_f.shape), (f"delta{s}", delta, (batch, length, width)),
                  (f"dt_weight{s}", dt_weight, (dim, width)), (f"A{s}", A, (dim, nstate)),
                  (f"B{s}", B, (batch, length, nstate)), (f"C{s}", C, (batch, length, nstate)),
                  (f"D{s}", D, (dim,)), (f"bias{s}", bias, (dim,))]
    check_shapes(*named)


@torch.library.custom_op("genossm::bidirectional_scan_fwd", mutates_args=())
def _bidir_fwd(u_f: torch.Tensor, delta_f: torch.Tensor, A_f: torch.Tensor, B_f: torch.Tensor,
               C_f: torch.Tensor, D_f: torch.Tensor, bias_f: torch.Tensor,
               u_r: torch.Tensor, delta_r: torch.Tensor, A_r: torch.Tensor, B_r: torch.Tensor,
               C_r: torch.Tensor, D_r: torch.Tensor, bias_r: torch.Tensor, z: torch.Tensor,
               out_weight: Optional[torch.Tensor], dt_weight_f: Optional[torch.Tensor],
               dt_weight_r: Optional[torch.Tensor], delta_softplus: bool,
               chunk: int) -> list[torch.Tensor]:
    y_f, _, _, h_in_f, dtsum_f = _scan_forward(
        u_f, _delta(delta_f, dt_weight_f), A_f, B_f, C_f, D_f, None, bias_f, None, None,
        delta_softplus, False, chunk, store_ypre=False, out_dtype=torch.float32)
    out, ypre, _, h_in_r, dtsum_r = _scan_forward(
        u_r, _delta(delta_r, dt_weight_r), A_r, B_r, C_r, D_r, z, bias_r, None, y_f,
        delta_softplus, True, chunk, store_ypre=True, out_dtype=u_f.dtype)
    if out_weight is not None:
        out = F.linear(out, out_weight.to(out.dtype))  # (batch, L, width)
    return [out, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r]


@_bidir_fwd.register_fake
def _(u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r, D_r, bias_r, z,
      out_weight, dt_weight_f, dt_weight_r, delta_softplus, chunk):
    batch, length, dim = u_f.shape
    n_chunks = -(-length // chunk)
    states = [u_f.new_empty(batch, n_chunks, A.shape[1], dim, dtype=torch.float32)
              for A in (A_f, A_r)]  # (batch, chunks, N, D) per direction: N may differ
    dtsums = [u_f.new_empty(batch, n_chunks, dim, dtype=torch.float32) for _ in range(2)]
    out = torch.empty_like(u_f) if out_weight is None else u_f.new_empty(batch, length, out_weight.shape[0])
    return [out, torch.empty_like(u_f), states[0], dtsums[0], states[1], dtsums[1]]


@torch.library.custom_op("genossm::bidirectional_scan_bwd", mutates_args=())
def _bidir_bwd(dout: torch.Tensor, u_f: torch.Tensor, delta_f: torch.Tensor, A_f: torch.Tensor,
               B_f: torch.Tensor, C_f: torch.Tensor, D_f: torch.Tensor, bias_f: torch.Tensor,
               u_r: torch.Tensor, delta_r: torch.Tensor, A_r: torch.Tensor, B_r: torch.Tensor,
               C_r: torch.Tensor, D_r: torch.Tensor, bias_r: torch.Tensor, z: torch.Tensor,
               out_weight: Optional[torch.Tensor], dt_weight_f: Optional[torch.Tensor],
               dt_weight_r: Optional[torch.Tensor], ypre: torch.Tensor, h_in_f: torch.Tensor,
               dtsum_f: torch.Tensor, h_in_r: torch.Tensor, dtsum_r: torch.Tensor,
               delta_softplus: bool, chunk: int) -> list[torch.Tensor]:
    """Gradients in the order of _bidir_fwd's tensor inputs (empty for absent weights)."""
    dweight = dout.new_empty(0)
    if out_weight is not None:  # dout is the gradient of the projection: back through it first
        gated = gate_forward(ypre, z)  # (batch, L, D), the forward's out up to ypre's rounding
        dweight = (dout.flatten(0, 1).t() @ gated.flatten(0, 1)).to(out_weight.dtype)  # (width, D)
        del gated

    def gated_grad():  # (batch, L, D) gradient of the gated output, remade rather than kept
        return dout if out_weight is None else dout @ out_weight.to(dout.dtype)

    dy, _ = gate_backward(gated_grad(), z, ypre, want_dz=False)
    grads, dt_weight_grads = [], []
    for u, delta, A, B, C, D, bias, dt_weight, h_in, dtsum, reverse in (
            (u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, dt_weight_f, h_in_f, dtsum_f, False),
            (u_r, delta_r, A_r, B_r, C_r, D_r, bias_r, dt_weight_r, h_in_r, dtsum_r, True)):
        du, ddelta, dbias, dA, dB, dC, dD, _ = _scan_backward(
            dy, u, _delta(delta, dt_weight), A, B, C, D, bias, h_in, dtsum, None, delta_softplus,
            reverse, chunk)
        d_dt_weight = dout.new_empty(0)
        if dt_weight is not None:  # back through the dt projection now, so ddelta is not kept
            d_dt_weight = (ddelta.flatten(0, 1).t() @ delta.flatten(0, 1)).to(dt_weight.dtype)
            ddelta = ddelta @ dt_weight.to(ddelta.dtype)  # (batch, L, R)
        grads += [du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dbias]
        dt_weight_grads.append(d_dt_weight)
    del dy
    _, dz = gate_backward(gated_grad(), z, ypre, want_dy=False)
    return grads + [dz, dweight] + dt_weight_grads


@_bidir_bwd.register_fake
def _(dout, u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r, D_r, bias_r,
      z, out_weight, dt_weight_f, dt_weight_r, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r,
      delta_softplus, chunk):
    per_dir = [torch.empty_like(t) for t in (u_f, delta_f, A_f, B_f, C_f, D_f, bias_f)]
    weights = [dout.new_empty(0) if w is None else torch.empty_like(w)
               for w in (out_weight, dt_weight_f, dt_weight_r)]
    return per_dir + [torch.empty_like(t) for t in per_dir] + [torch.empty_like(z)] + weights


def _setup_context(ctx, inputs, output):
    *tensors, delta_softplus, chunk = inputs
    _out, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r = output
    ctx.save_for_backward(*tensors, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r)
    ctx.flags = (delta_softplus, chunk)
    ctx.weights_given = [w is not None for w in tensors[-3:]]  # out_weight, dt_weight_f, _r


def _backward(ctx, output_grads):
    *grads, dweight, d_dt_f, d_dt_r = _bidir_bwd(output_grads[0].contiguous(), *ctx.saved_tensors,
                                                 *ctx.flags)
    weight_grads = [g if given else None
                    for g, given in zip((dweight, d_dt_f, d_dt_r), ctx.weights_given)]
    return (*grads, *weight_grads, None, None)


_bidir_fwd.register_autograd(_backward, setup_context=_setup_context)


def bidirectional_selective_scan(u_f, delta_f, A_f, B_f, C_f, D_f, bias_f,
                                 u_r, delta_r, A_r, B_r, C_r, D_r, bias_r, z,
                                 delta_softplus: bool = True, chunk_size: Optional[int] = None,
                                 impl: str = "auto", out_weight: Optional[torch.Tensor] = None,
                                 dt_weight_f: Optional[torch.Tensor] = None,
                                 dt_weight_r: Optional[torch.Tensor] = None):
    """(scan(forward) + scan(reverse)) * silu(z), then ``@ out_weight.T`` when ``out_weight``
    (width, D) is given; with ``dt_weight_*`` (D, R), ``delta_*`` is (batch, L, R) and the scan's
    delta is ``delta_* @ dt_weight_*.T`` (see the module docstring). Other shapes as in
    ``selective_scan``; D_* and bias_* are (D,) float32 and required here. ``impl``: "auto"
    (Triton on CUDA, PyTorch on the CPU), "triton" or "torch"."""
    _check_inputs(u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r, D_r,
                  bias_r, z, dt_weight_f, dt_weight_r)
    if impl == "torch" or (impl == "auto" and not use_triton(u_f)):
        y_f = selective_scan_ref(u_f, _delta(delta_f, dt_weight_f), A_f, B_f, C_f, D_f, None,
                                 bias_f, delta_softplus)
        y_r = selective_scan_ref(u_r, _delta(delta_r, dt_weight_r), A_r, B_r, C_r, D_r, None,
                                 bias_r, delta_softplus, reverse=True)
        out = ((y_f.float() + y_r.float()) * F.silu(z.float())).to(u_f.dtype)
        return out if out_weight is None else F.linear(out, out_weight.to(out.dtype))
    batch, length, dim = u_f.shape
    if chunk_size is None:
        chunk_size = default_chunk_size(batch, length, dim, _block_sizes(dim, A_f.shape[1])[0],
                                        u_f.device)
    check_chunk(chunk_size)
    f32 = [t.float().contiguous() for t in (A_f, D_f, bias_f, A_r, D_r, bias_r)]
    return _bidir_fwd(u_f.contiguous(), delta_f.contiguous(), f32[0], B_f.contiguous(),
                      C_f.contiguous(), f32[1], f32[2], u_r.contiguous(), delta_r.contiguous(),
                      f32[3], B_r.contiguous(), C_r.contiguous(), f32[4], f32[5], z.contiguous(),
                      out_weight, dt_weight_f, dt_weight_r, bool(delta_softplus),
                      int(chunk_size))[0]
