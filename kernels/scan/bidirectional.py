"""Fused bidirectional selective scan for the model's mixer.

    out = (scan(u_f, ...) + scan_reverse(u_r, ...)) * silu(z)

Each direction has its own u (its conv output), delta, A, B, C, D and delta_bias; both share the
gate z. On the Triton path the forward direction writes its y in float32, the reverse direction
adds it, gates, and writes one output: no flipped copies, one gate, one output tensor. Backward
computes the gate gradient once and runs both directions' adjoint kernels on the same dy.

With ``out_weight`` the op also applies the mixer's output projection, ``out @ out_weight.T``, so
that the gated output need not be kept for backward: backward recomputes it from the pre-gate sum
and z (which the gate's backward keeps anyway) for the weight gradient and frees it, with the
gradient of the gated output, before the scans' backward, the peak of a block's backward (2 x
(batch, L, D) bfloat16 less there: 2 GiB at 1M positions for the reference model).
"""

from typing import Optional

import torch
import torch.nn.functional as F

from genossm.kernels.scan.op import (
    _block_sizes,
    _scan_backward,
    _scan_forward,
    check_chunk,
    default_chunk_size,
    gate_backward,
    gate_forward,
    use_triton,
)
from genossm.kernels.scan.reference import selective_scan_ref


@torch.library.custom_op("genossm::bidirectional_scan_fwd", mutates_args=())
def _bidir_fwd(u_f: torch.Tensor, delta_f: torch.Tensor, A_f: torch.Tensor, B_f: torch.Tensor,
               C_f: torch.Tensor, D_f: torch.Tensor, bias_f: torch.Tensor,
               u_r: torch.Tensor, delta_r: torch.Tensor, A_r: torch.Tensor, B_r: torch.Tensor,
               C_r: torch.Tensor, D_r: torch.Tensor, bias_r: torch.Tensor, z: torch.Tensor,
               out_weight: Optional[torch.Tensor], delta_softplus: bool,
               chunk: int) -> list[torch.Tensor]:
    y_f, _, _, h_in_f, dtsum_f = _scan_forward(
        u_f, delta_f, A_f, B_f, C_f, D_f, None, bias_f, None, None, delta_softplus, False, chunk,
        store_ypre=False, out_dtype=torch.float32)
    out, ypre, _, h_in_r, dtsum_r = _scan_forward(
        u_r, delta_r, A_r, B_r, C_r, D_r, z, bias_r, None, y_f, delta_softplus, True, chunk,
        store_ypre=True, out_dtype=u_f.dtype)
    if out_weight is not None:
        out = F.linear(out, out_weight.to(out.dtype))  # (batch, L, width)
    return [out, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r]


@_bidir_fwd.register_fake
def _(u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r, D_r, bias_r, z,
      out_weight, delta_softplus, chunk):
    batch, length, dim = u_f.shape
    n_chunks = -(-length // chunk)
    states = [u_f.new_empty(batch, n_chunks, A_f.shape[1], dim, dtype=torch.float32),
              u_f.new_empty(batch, n_chunks, dim, dtype=torch.float32)]
    out = torch.empty_like(u_f) if out_weight is None else u_f.new_empty(batch, length, out_weight.shape[0])
    return [out, torch.empty_like(u_f)] + states + [torch.empty_like(s) for s in states]


@torch.library.custom_op("genossm::bidirectional_scan_bwd", mutates_args=())
def _bidir_bwd(dout: torch.Tensor, u_f: torch.Tensor, delta_f: torch.Tensor, A_f: torch.Tensor,
               B_f: torch.Tensor, C_f: torch.Tensor, D_f: torch.Tensor, bias_f: torch.Tensor,
               u_r: torch.Tensor, delta_r: torch.Tensor, A_r: torch.Tensor, B_r: torch.Tensor,
               C_r: torch.Tensor, D_r: torch.Tensor, bias_r: torch.Tensor, z: torch.Tensor,
               out_weight: Optional[torch.Tensor], ypre: torch.Tensor, h_in_f: torch.Tensor,
               dtsum_f: torch.Tensor, h_in_r: torch.Tensor, dtsum_r: torch.Tensor,
               delta_softplus: bool, chunk: int) -> list[torch.Tensor]:
    dweight = dout.new_empty(0)
    if out_weight is not None:  # dout is the gradient of the projection: back through it first
        weight = out_weight.to(dout.dtype)
        gated = gate_forward(ypre, z)  # (batch, L, D), the forward's out up to ypre's rounding
        dweight = (dout.flatten(0, 1).t() @ gated.flatten(0, 1)).to(out_weight.dtype)  # (width, D)
        del gated
        dout = dout @ weight  # (batch, L, D)
    dy, dz = gate_backward(dout, z, ypre)
    del dout
    grads = []
    for u, delta, A, B, C, D, bias, h_in, dtsum, reverse in (
            (u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, h_in_f, dtsum_f, False),
            (u_r, delta_r, A_r, B_r, C_r, D_r, bias_r, h_in_r, dtsum_r, True)):
        du, ddelta, dbias, dA, dB, dC, dD, _ = _scan_backward(
            dy, u, delta, A, B, C, D, bias, h_in, dtsum, None, delta_softplus, reverse, chunk)
        grads += [du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dbias]
    return grads + [dz, dweight]


@_bidir_bwd.register_fake
def _(dout, u_f, delta_f, A_f, B_f, C_f, D_f, bias_f, u_r, delta_r, A_r, B_r, C_r, D_r, bias_r,
      z, out_weight, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r, delta_softplus, chunk):
    per_dir = [torch.empty_like(t) for t in (u_f, delta_f, A_f, B_f, C_f, D_f, bias_f)]
    dweight = dout.new_empty(0) if out_weight is None else torch.empty_like(out_weight)
    return per_dir + [torch.empty_like(t) for t in per_dir] + [torch.empty_like(z), dweight]


def _setup_context(ctx, inputs, output):
    *tensors, delta_softplus, chunk = inputs
    _out, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r = output
    ctx.save_for_backward(*tensors, ypre, h_in_f, dtsum_f, h_in_r, dtsum_r)
    ctx.flags = (delta_softplus, chunk)
    ctx.has_weight = tensors[-1] is not None


def _backward(ctx, output_grads):
    *grads, dweight = _bidir_bwd(output_grads[0].contiguous(), *ctx.saved_tensors, *ctx.flags)
    return (*grads, dweight if ctx.has_weight else None, None, None)


_bidir_fwd.register_autograd(_backward, setup_context=_setup_context)


def bidirectional_selective_scan(u_f, delta_f, A_f, B_f, C_f, D_f, bias_f,
                                 u_r, delta_r, A_r, B_r, C_r, D_r, bias_r, z,
                                 delta_softplus: bool = True, chunk_size: Optional[int] = None,
                                 impl: str = "auto", out_weight: Optional[torch.Tensor] = None):
    """(scan(forward) + scan(reverse)) * silu(z), then ``@ out_weight.T`` when ``out_weight``
    (width, D) is given (see the module docstring). Shapes as in ``selective_scan``; D_* and
    bias_* are (D,) float32 and required here. ``impl``: "auto" (Triton on CUDA, PyTorch on the
    CPU), "triton" or "torch"."""
    if impl == "torch" or (impl == "auto" and not use_triton(u_f)):
        y_f = selective_scan_ref(u_f, delta_f, A_f, B_f, C_f, D_f, None, bias_f, delta_softplus)
        y_r = selective_scan_ref(u_r, delta_r, A_r, B_r, C_r, D_r, None, bias_r, delta_softplus,
                                 reverse=True)
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
                      out_weight, bool(delta_softplus), int(chunk_size))[0]
