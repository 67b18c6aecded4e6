"""``selective_scan``: the public op. Triton on CUDA, the vectorized chunked PyTorch reference on
the CPU. Registered with ``torch.library`` (custom ops with fake implementations and autograd) so
``torch.compile`` can trace models that call it.

Shapes: u, delta, z (batch, L, D); B, C (batch, L, N); A (D, N) float32; D, delta_bias (D,)
float32; initial_state (batch, D, N) float32.
"""

import functools
import math
import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton

from genossm.kernels.scan import triton_scan as K
from genossm.kernels.scan.reference import selective_scan_ref


@dataclass
class ScanTuning:
    """Launch parameters (chosen on an H200 with benchmarks/bench_scan.py --sweep, 2026-12-01)."""

    groups: int = 8  # backward: two-position groups per super-block (chunks: whole super-blocks)
    block_d: int = 32  # channels per program: one lane each, all N states in its registers
    num_warps: int = 1
    programs_per_sm: int = 16  # chunks are sized so that a wave of programs fills the GPU
    bwd_block_d: int = 32
    bwd_num_warps: int = 1
    lane_sums: bool = True  # backward dB, dC sums over channels by warp shuffles (GPU, 32 lanes)
    # From long_from positions (batch x L) on, the backward takes long_groups groups per
    # super-block: it saves one float32 (N, D) state per super-block, 2 GiB per direction at 1M
    # positions with 8 groups, and a 4M window on an 80 GB GPU needs the 4 GiB that 16 groups give
    # back (16 groups: 5% slower scan backward at 1M on the H200, 2026-12-01)
    long_groups: int = 16
    long_from: int = 1 << 21


TUNING = ScanTuning()

# Tests set this to fill every kernel output with NaN before launch, so that an element a kernel
# fails to write shows up; off otherwise, where the fills would cost a pass over each output.
POISON_OUTPUTS = False
_GATE_BLOCK = 1024  # elements per program of the elementwise gate kernels


def _output(shape, device, dtype):
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(shape, device=device, dtype=dtype)


def use_triton(u: torch.Tensor) -> bool:
    """Triton on CUDA tensors; CPU tensors take the vectorized PyTorch path (the Triton kernels
    run on the CPU only through ``selective_scan_triton`` under TRITON_INTERPRET=1, for tests)."""
    return u.is_cuda


def default_chunk_size(batch: int, length: int, dim: int, block_d: int, device=None) -> int:
    """Split the sequence so that one wave of one-warp programs fills the GPU
    (``TUNING.programs_per_sm`` resident per SM): fewer chunks leave SMs idle, more add a second,
    mostly empty wave. A multiple of the super-block; the saved chunk-start states
    (batch, L / chunk, N, D) stay small."""
    sms = _multiprocessors(device)
    programs_without_chunks = batch * triton.cdiv(dim, block_d)
    chunks_wanted = max(1, sms * TUNING.programs_per_sm // programs_without_chunks)
    # long inputs: whole super-blocks of both sizes, so that the backward can take the long ones
    unit = 2 * math.lcm(TUNING.groups, TUNING.long_groups) if _long_input(batch * length) else superblock()
    chunk = triton.cdiv(triton.cdiv(length, chunks_wanted), unit) * unit
    return max(chunk, 2 * unit)


def superblock() -> int:
    """Positions per super-block of the forward-side loops; chunk sizes are multiples of it."""
    return 2 * TUNING.groups


def _long_input(positions: int) -> bool:
    """Whether ``positions`` (batch x L) reach ``TUNING.long_from``, where the backward prefers
    super-blocks of ``TUNING.long_groups`` groups."""
    return positions >= TUNING.long_from


def backward_groups(positions: int, chunk: int) -> int:
    """Two-position groups per backward super-block: ``TUNING.long_groups`` for long inputs
    where the chunk holds whole super-blocks of that size, else ``TUNING.groups``."""
    if _long_input(positions) and chunk % (2 * TUNING.long_groups) == 0:
        return TUNING.long_groups
    return TUNING.groups


@functools.lru_cache(maxsize=None)
def _multiprocessors(device) -> int:
    if device is None or torch.device(device).type != "cuda":
        return 132  # H100-sized default (CPU interpreter runs and shape-only tracing)
    return torch.cuda.get_device_properties(device).multi_processor_count


def _block_sizes(dim: int, nstate: int, block_d_max: int | None = None):
    block_n = triton.next_power_of_2(nstate)
    block_d_max = TUNING.block_d if block_d_max is None else block_d_max
    block_d = min(triton.next_power_of_2(dim), block_d_max)
    return block_d, block_n


def check_chunk(chunk: int):
    """The kernels walk whole super-blocks: a chunk size that is not a multiple would leave
    positions unscanned."""
    if chunk < 1 or chunk % superblock():
        raise ValueError(f"chunk_size must be a positive multiple of {superblock()}, got {chunk}")


def check_shapes(*named):
    """``(name, tensor or None, expected shape)`` triples: a ValueError for the first given tensor
    of another shape. The kernels index their inputs by u's and A's sizes alone, so a wrong shape
    would be read out of bounds rather than raise."""
    for name, t, shape in named:
        if t is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must be of shape {tuple(shape)}, got {tuple(t.shape)}")


def _check(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must be (batch, L, D) of one shape, got {tuple(u.shape)}, "
                         f"{tuple(delta.shape)}")
    if B.shape != C.shape or B.shape[:2] != u.shape[:2] or A.shape != (u.shape[2], B.shape[2]):
        raise ValueError(f"B, C must be (batch, L, N) and A (D, N); got B {tuple(B.shape)}, "
                         f"C {tuple(C.shape)}, A {tuple(A.shape)}")
    batch, _, dim = u.shape
    check_shapes(("z", z, u.shape), ("D", D, (dim,)), ("delta_bias", delta_bias, (dim,)),
                 ("initial_state", initial_state, (batch, dim, A.shape[1])))


def _scan_forward(u, delta, A, B, C, D, z, delta_bias, initial_state, yadd, softplus, reverse,
                  chunk, store_ypre, out_dtype):
    """Launch the three forward kernels. Returns y, ypre (or None), final state, H_in, dtsum."""
    check_chunk(chunk)
    batch, length, dim = u.shape
    nstate = A.shape[1]
    block_d, block_n = _block_sizes(dim, nstate)
    n_chunks = triton.cdiv(length, chunk)
    dev = u.device
    A_t = A.t().contiguous()  # (N, D): kernels keep states channel-contiguous
    B, C = B.float().contiguous(), C.float().contiguous()  # (batch, L, N): vector row loads
    h_local = _output((batch, n_chunks, nstate, dim), dev, torch.float32)
    dtsum = _output((batch, n_chunks, dim), dev, torch.float32)
    grid = (batch, triton.cdiv(dim, block_d), n_chunks)
    seq = dict(BD=block_d, BN=block_n, REVERSE=reverse, SOFTPLUS=softplus,
               HAS_BIAS=delta_bias is not None, EVEN_N=nstate == block_n,
               num_warps=TUNING.num_warps)
    strides = (u.stride(0), u.stride(1), B.stride(0), B.stride(1))
    K._chunk_states[grid](u, delta, delta_bias, A_t, B, None, h_local, dtsum, None,
                          length, dim, nstate, n_chunks, chunk, *strides,
                          SB=superblock(), FOR_BACKWARD=False, **seq)
    h_in = _output(h_local.shape, dev, torch.float32)
    final = _launch_pass(h_local, dtsum, A_t, initial_state, h_in, backward=False)
    y = _output(u.shape, dev, out_dtype)
    ypre = _output(u.shape, dev, out_dtype) if store_ypre else None
    K._chunk_scan_fwd[grid](u, delta, delta_bias, A_t, B, C, D, z, h_in, yadd, ypre, y,
                            length, dim, nstate, n_chunks, chunk, *strides,
                            HAS_D=D is not None, HAS_Z=z is not None, HAS_YADD=yadd is not None,
                            STORE_YPRE=store_ypre, SB=superblock(), **seq)
    return y, ypre, final, h_in, dtsum


def _launch_pass(local, dtsum, A_t, init, out, backward):
    """Carry states (or adjoints) across chunks. init/returned final: (batch, D, N) float32."""
    batch, n_chunks, nstate, dim = local.shape
    block = min(1024, triton.next_power_of_2(dim * nstate))
    if init is not None:
        init = init.transpose(1, 2).contiguous()
    final = _output((batch, nstate, dim), local.device, torch.float32)
    K._pass_states[(batch, triton.cdiv(dim * nstate, block))](
        local, dtsum, A_t, init, out, final, dim, nstate, n_chunks,
        BLOCK=block, BACKWARD=backward, HAS_INIT=init is not None)
    return final.transpose(1, 2).contiguous()


def _scan_backward(dy, u, delta, A, B, C, D, delta_bias, h_in, dtsum, dfinal, softplus, reverse,
                   chunk):
    """dy: (batch, L, D) gradient of the pre-gate output (any float dtype; read as float32).
    Returns du, ddelta (in u's and delta's dtypes), d_delta_bias, dA, dB, dC (float32), dD,
    d_initial_state; None for the gradients of absent inputs."""
    batch, length, dim = u.shape
    nstate = A.shape[1]
    block_d, block_n = _block_sizes(dim, nstate, TUNING.bwd_block_d)
    n_chunks = h_in.shape[1]
    n_dblocks = triton.cdiv(dim, block_d)
    dev = u.device
    grid = (batch, n_dblocks, n_chunks)
    seq = dict(BD=block_d, BN=block_n, REVERSE=reverse, SOFTPLUS=softplus,
               HAS_BIAS=delta_bias is not None, EVEN_N=nstate == block_n,
               num_warps=TUNING.bwd_num_warps)
    B, C = B.float().contiguous(), C.float().contiguous()  # as in the forward
    strides = (u.stride(0), u.stride(1), B.stride(0), B.stride(1))
    A_t = A.t().contiguous()
    groups = backward_groups(batch * length, chunk)
    tile_h = _output((batch, n_chunks, chunk // (2 * groups), nstate, dim), dev, torch.float32)
    K._chunk_states[grid](u, delta, delta_bias, A_t, B, h_in, None, None, tile_h,
                          length, dim, nstate, n_chunks, chunk, *strides,
                          SB=2 * groups, FOR_BACKWARD=True, **seq)
    g_local = _output((batch, n_chunks, nstate, dim), dev, torch.float32)
    K._chunk_adjoints[grid](delta, delta_bias, A_t, C, dy, g_local, length, dim, nstate, n_chunks,
                            chunk, *strides, SB=superblock(), **seq)
    g_in = _output(g_local.shape, dev, torch.float32)
    dh0 = _launch_pass(g_local, dtsum, A_t, dfinal, g_in, backward=True)
    del g_local
    du = _output(u.shape, dev, u.dtype)
    ddelta = _output(u.shape, dev, delta.dtype)
    dB_part = _output((batch, length, n_dblocks, nstate), dev, torch.float32)
    dC_part = _output(dB_part.shape, dev, torch.float32)
    dA_part = _output((batch, n_chunks, nstate, dim), dev, torch.float32)
    dD_part = _output((batch, n_chunks, dim), dev, torch.float32)
    dbias_part = _output((batch, n_chunks, dim), dev, torch.float32)
    slots = _output((batch, n_chunks, groups, nstate, dim), dev, torch.float32)
    K._chunk_scan_bwd[grid](u, delta, delta_bias, A_t, B, C, D, dy, tile_h, slots, g_in, du,
                            ddelta, dB_part, dC_part, dA_part, dD_part, dbias_part,
                            length, dim, nstate, n_chunks, chunk, n_dblocks, *strides,
                            GROUPS=groups, HAS_D=D is not None,
                            LANE_SUMS=_lane_sums(block_d, block_n, nstate), **seq)
    dD = dD_part.sum((0, 1)) if D is not None else None
    dbias = dbias_part.sum((0, 1)) if delta_bias is not None else None
    dA = dA_part.sum((0, 1)).t().contiguous()  # (D, N) like A, as the fake kernels promise
    return du, ddelta, dbias, dA, dB_part.sum(2), dC_part.sum(2), dD, dh0


def _lane_sums(block_d, block_n, nstate) -> bool:
    """The shuffle reduction needs one full warp of channel lanes, N == BN <= 32 and NVIDIA PTX
    (the interpreter and ROCm run the plain tree sum)."""
    return (TUNING.lane_sums and block_d == 32 and TUNING.bwd_num_warps == 1
            and nstate == block_n <= 32 and torch.version.hip is None
            and os.environ.get("TRITON_INTERPRET") != "1")


def gate_backward(dout, z, ypre, want_dy: bool = True, want_dz: bool = True):
    """Backward of out = ypre * silu(z): returns (dypre contiguous, dz), each None when not
    wanted (the bidirectional op computes dz after its scans, so that the two are never both
    kept). Without z: (dout, an empty tensor). dypre is bfloat16 when dout is (one more rounding
    of an already-bf16 gradient, half the memory: 4 GiB less at 4M positions), else float32
    (float16 could overflow); the scan kernels accumulate in float32 either way."""
    if z is None:
        return dout.contiguous(), dout.new_empty(0)
    dout, z, ypre = dout.contiguous(), z.contiguous(), ypre.contiguous()  # flat indexing
    dy_dtype = torch.bfloat16 if dout.dtype == torch.bfloat16 else torch.float32
    dy = _output(dout.shape, dout.device, dy_dtype) if want_dy else None
    dz = _output(z.shape, z.device, z.dtype) if want_dz else None
    K._gate_bwd[(triton.cdiv(dout.numel(), _GATE_BLOCK),)](dout, z, ypre, dy, dz, dout.numel(),
                                                           BLOCK=_GATE_BLOCK, WRITE_DY=want_dy,
                                                           WRITE_DZ=want_dz)
    return dy, dz


def gate_forward(ypre, z):
    """ypre * silu(z) in ypre's dtype, computed in float32 without float32 temporaries."""
    ypre, z = ypre.contiguous(), z.contiguous()
    out = _output(ypre.shape, ypre.device, ypre.dtype)
    K._gate_fwd[(triton.cdiv(ypre.numel(), _GATE_BLOCK),)](ypre, z, out, ypre.numel(), BLOCK=_GATE_BLOCK)
    return out


def _contig(t):
    return None if t is None else t.contiguous()


@torch.library.custom_op("genossm::selective_scan_fwd", mutates_args=())
def _selective_scan_fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                        C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                        delta_bias: Optional[torch.Tensor], initial_state: Optional[torch.Tensor],
                        delta_softplus: bool, reverse: bool, chunk: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                   torch.Tensor]:
    y, ypre, final, h_in, dtsum = _scan_forward(
        u, delta, A, B, C, D, z, delta_bias, initial_state, None, delta_softplus, reverse, chunk,
        store_ypre=z is not None, out_dtype=u.dtype)
    if ypre is None:
        ypre = u.new_empty(0)
    return y, ypre, final, h_in, dtsum


@_selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, chunk):
    batch, length, dim = u.shape
    n_chunks = -(-length // chunk)
    ypre = torch.empty_like(u) if z is not None else u.new_empty(0)
    return (torch.empty_like(u), ypre, u.new_empty(batch, dim, A.shape[1], dtype=torch.float32),
            u.new_empty(batch, n_chunks, A.shape[1], dim, dtype=torch.float32),
            u.new_empty(batch, n_chunks, dim, dtype=torch.float32))


@torch.library.custom_op("genossm::selective_scan_bwd", mutates_args=())
def _selective_scan_bwd(dout: torch.Tensor, dfinal: Optional[torch.Tensor], u: torch.Tensor,
                        delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                        D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                        delta_bias: Optional[torch.Tensor], ypre: torch.Tensor,
                        h_in: torch.Tensor, dtsum: torch.Tensor, delta_softplus: bool,
                        reverse: bool, chunk: int) -> list[torch.Tensor]:
    dy, dz = gate_backward(dout, z, ypre)
    du, ddelta, dbias, dA, dB, dC, dD, dh0 = _scan_backward(
        dy, u, delta, A, B, C, D, delta_bias, h_in, dtsum, dfinal, delta_softplus,
        reverse, chunk)
    return [du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), u.new_empty(0) if dD is None else dD,
            dz, u.new_empty(0) if dbias is None else dbias, dh0]


@_selective_scan_bwd.register_fake
def _(dout, dfinal, u, delta, A, B, C, D, z, delta_bias, ypre, h_in, dtsum, delta_softplus,
      reverse, chunk):
    def like(t):  # one empty tensor per absent gradient, as the real op returns: shared ones alias
        return u.new_empty(0) if t is None else torch.empty_like(t)

    return [torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A, dtype=torch.float32),
            torch.empty_like(B), torch.empty_like(C), like(D), like(z), like(delta_bias),
            u.new_empty(u.shape[0], u.shape[2], A.shape[1], dtype=torch.float32)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, chunk = inputs
    _y, ypre, _final, h_in, dtsum = output
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ypre, h_in, dtsum)
    ctx.flags = (delta_softplus, reverse, chunk, initial_state is not None)


def _backward(ctx, dy, _dypre, dfinal, _dh_in, _ddtsum):
    u, delta, A, B, C, D, z, delta_bias, ypre, h_in, dtsum = ctx.saved_tensors
    softplus, reverse, chunk, has_init = ctx.flags
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = _selective_scan_bwd(
        dy.contiguous(), None if dfinal is None else dfinal.contiguous(), u, delta, A, B, C, D, z,
        delta_bias, ypre, h_in, dtsum, softplus, reverse, chunk)
    return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
            dbias if delta_bias is not None else None, dh0 if has_init else None,
            None, None, None)


_selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_final_state=False,
                          reverse=False, chunk_size=None):
    """The Triton path with an optional explicit chunk size (a multiple of ``superblock()``)."""
    _check(u, delta, A, B, C, D, z, delta_bias, initial_state)
    batch, length, dim = u.shape
    if chunk_size is None:
        chunk_size = default_chunk_size(batch, length, dim, _block_sizes(dim, A.shape[1])[0],
                                        u.device)
    check_chunk(chunk_size)
    y, _ypre, final, _h_in, _dtsum = _selective_scan_fwd(
        u.contiguous(), delta.contiguous(), A.float().contiguous(), B.contiguous(), C.contiguous(),
        None if D is None else D.float().contiguous(), _contig(z),
        None if delta_bias is None else delta_bias.float().contiguous(),
        None if initial_state is None else initial_state.float().contiguous(),
        bool(delta_softplus), bool(reverse), int(chunk_size))
    return (y, final) if return_final_state else y


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_final_state=False, reverse=False):
    """Selective scan (semantics in ``reference.py``). Returns y in u's dtype, and the final state
    (batch, D, N) float32 when ``return_final_state``."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state,
            reverse)
    if use_triton(u):
        return selective_scan_triton(*args)
    _check(u, delta, A, B, C, D, z, delta_bias, initial_state)
    return selective_scan_ref(*args)
