"""Triton kernels for the chunked selective scan, layout (batch, length, channels).

Grid: (batch, channel blocks, chunks). One lane owns one channel and keeps all N of its states in
registers; a program walks its chunk position by position (the only loop-carried dependency is
one FMA per state), and chunks run in parallel. p is the position in processing order, t the
memory index (t = L-1-p for the reverse direction: no flipped copies).

Forward:
  1. ``_chunk_states``   each chunk scans from h = 0 and writes its end state and sum(dt);
  2. ``_pass_states``    a short sequential pass over chunks turns those into each chunk's true
                         start state H_in (the only state saved for backward: O(L / chunk));
  3. ``_chunk_scan_fwd`` each chunk re-scans from H_in and writes y.
Backward (h_{t-1} is needed walking backwards; it is never recovered by dividing by a_t):
  1. ``_chunk_states``   recomputes the state at every SB-position super-block start from H_in;
  2. ``_chunk_adjoints`` each chunk walks ghat_t = a_t (C_t dy_t + ghat_{t+1}) back from zero and
                         writes its contribution at the chunk start;
  3. ``_pass_states``    (reversed over chunks) gives the adjoint entering each chunk;
  4. ``_chunk_scan_bwd`` walks each chunk's super-blocks in reverse: a forward walk saves the
                         state before every group of two positions (a small per-program slot
                         buffer), then each group recomputes its two states into registers and
                         steps the adjoint back over them, writing du, ddelta and per-block
                         partials of dB, dC, dA, dD and d(delta_bias) that torch sums in a
                         fixed order (deterministic, no atomics).
Exponentials are exp2 with A pre-scaled by log2(e). All offsets are int64. A and every state
tensor are stored (N, D) with channels contiguous and moved one (BD,) row per state
(``_load_tile``/``_store_tile``), so the (BN, BD) register tiles keep the layout of the per-position
(BD,) loads: lane = channel, its N states in its own registers, sums over N inside the thread,
no layout conversions in the loops. B and C arrive in float32 so that each lane reads a row with
N/4 vector loads.
"""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _dt_from_delta(delta, bias, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """dt = delta + delta_bias, then softplus (linear above 20, where softplus(x) == x in fp32)."""
    if HAS_BIAS:
        delta += bias
    if SOFTPLUS:
        delta = tl.where(delta <= 20.0, tl.log(1.0 + tl.exp(delta)), delta)
    return delta


@triton.jit
def _load_tile(ptr, offs_n, offs_d, mask_d, N, D, BN: tl.constexpr, BD: tl.constexpr):
    """(BN, BD) float32 tile of an (N, D) row-major block, one (BD,) row load per state: a 2-D
    load would take a vectorized layout that splits a channel's states over lanes."""
    tile = tl.zeros((BN, BD), dtype=tl.float32)
    for n in tl.static_range(BN):
        row = tl.load(ptr + n * D + offs_d, mask=mask_d & (offs_d * 0 + n < N), other=0.0)
        tile = tl.where(offs_n[:, None] == n, row[None, :], tile)
    return tile


@triton.jit
def _store_tile(ptr, tile, offs_n, offs_d, mask_d, N, D, BN: tl.constexpr):
    """Store a (BN, BD) tile into an (N, D) row-major block, one row per state (see _load_tile)."""
    for n in tl.static_range(BN):
        row = tl.sum(tl.where(offs_n[:, None] == n, tile, 0.0), axis=0)
        tl.store(ptr + n * D + offs_d, row, mask=mask_d & (offs_d * 0 + n < N))


@triton.jit
def _program_block(A_ptr, bias_ptr, D, N, n_chunks, BD: tl.constexpr, BN: tl.constexpr,
                   HAS_BIAS: tl.constexpr):
    """This program's (batch, channel block, chunk) and what every kernel loads first: channel
    and state offsets and masks, A * log2(e) (BN, BD), delta_bias (BD,) and the offset of its
    chunk's (N, D) state slot."""
    bid = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    cid = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    mask_d = offs_d < D
    offs_n = tl.arange(0, BN)
    mask_n = offs_n < N
    A2 = _load_tile(A_ptr, offs_n, offs_d, mask_d, N, D, BN, BD) * LOG2E
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)
    else:
        bias = tl.zeros((BD,), dtype=tl.float32)
    state = (bid * n_chunks + cid) * N * D  # this chunk's (N, D) slot in per-chunk state tensors
    return bid, pid_d, cid, offs_d, mask_d, offs_n, mask_n, A2, bias, state


@triton.jit
def _load_row(ptrs, mask_n, EVEN_N: tl.constexpr):
    """A (BN,) float32 row of B or C. Past L the row index is clamped (dt = 0 there makes the step
    an identity), so with N == BN the load needs no mask and vectorizes."""
    if EVEN_N:
        return tl.load(ptrs)
    return tl.load(ptrs, mask=mask_n, other=0.0)


@triton.jit
def _load_raw(u_ptr, dt_ptr, B_ptr, bid, p, L, offs_d, mask_d, offs_n, mask_n,
              stride_ub, stride_ul, stride_bb, stride_bl, REVERSE: tl.constexpr,
              EVEN_N: tl.constexpr):
    """Issue the loads of one position and use nothing: delta and u (BD,) as stored, the B row
    (BN,), the row offset of (b, t) in u-like tensors, the (BD,) mask and the B/C row offset."""
    t = (L - 1 - p) if REVERSE else p
    t = tl.where(p < L, t, 0).to(tl.int64)
    m = mask_d & (offs_d * 0 + p < L)  # vector form: the interpreter rejects scalar masks
    row = bid * stride_ub + t * stride_ul
    delta = tl.load(dt_ptr + row + offs_d, mask=m, other=0.0)
    u = tl.load(u_ptr + row + offs_d, mask=m, other=0.0)
    brow = bid * stride_bb + t * stride_bl
    Bt = _load_row(B_ptr + brow + offs_n, mask_n, EVEN_N)
    return delta, u, Bt, row, m, brow


@triton.jit
def _dt_from_raw(delta, m, bias, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """dt (BD,) float32 from stored delta: bias, softplus, 0 past L (an identity step)."""
    dt = _dt_from_delta(delta.to(tl.float32), bias, SOFTPLUS, HAS_BIAS)
    return tl.where(m, dt, 0.0)


@triton.jit
def _state_step(h, delta, u, Bt, m, A2, bias, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The state after a position from the state before it and the position's raw loads;
    also returns dt (BD,) and the decay exp(dt A) (BN, BD)."""
    dt = _dt_from_raw(delta, m, bias, SOFTPLUS, HAS_BIAS)
    a = tl.exp2(dt[None, :] * A2)
    return a * h + (dt * u.to(tl.float32))[None, :] * Bt[:, None], dt, a


# The sequential loops below take two positions per step and load each position one position
# before computing it: set 0 is carried across steps and loaded a whole position before the loop
# back edge, set 1 lives within a step. With one position per step, the carried copy of the
# next position's loads sat right after the loads and waited for them (ncu: half the stalls).
# The steps are nested in super-blocks of SB positions even where nothing happens per super-block:
# one flat loop over the chunk compiled to a slower loop (benchmarks/README.md: 13.2 vs 9.6 ms).


@triton.jit
def _state_pair(h, d0, u0, B0, m0, u_ptr, dt_ptr, B_ptr, bid, p, L, offs_d, mask_d, offs_n, mask_n,
                A2, bias, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE: tl.constexpr,
                SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_N: tl.constexpr):
    """One two-position step of a state walk: positions p (set 0, loaded one step before) and
    p + 1; issues set 0 of the next step (position p + 2). Returns the state after p + 1, the two
    positions' dt summed, and the next set 0."""
    d1, u1, B1, _r1, m1, _b1 = _load_raw(u_ptr, dt_ptr, B_ptr, bid, p + 1, L, offs_d, mask_d,
                                         offs_n, mask_n, stride_ub, stride_ul, stride_bb,
                                         stride_bl, REVERSE, EVEN_N)
    h, dt_a, _a = _state_step(h, d0, u0, B0, m0, A2, bias, SOFTPLUS, HAS_BIAS)
    d0, u0, B0, _r0, m0, _b0 = _load_raw(u_ptr, dt_ptr, B_ptr, bid, p + 2, L, offs_d, mask_d,
                                         offs_n, mask_n, stride_ub, stride_ul, stride_bb,
                                         stride_bl, REVERSE, EVEN_N)
    h, dt_b, _a = _state_step(h, d1, u1, B1, m1, A2, bias, SOFTPLUS, HAS_BIAS)
    return h, dt_a + dt_b, d0, u0, B0, m0


@triton.jit(do_not_specialize=["L", "n_chunks"])
def _chunk_states(u_ptr, dt_ptr, bias_ptr, A_ptr, B_ptr, h0_ptr, hend_ptr, dtsum_ptr, tile_h_ptr,
                  L, D, N, n_chunks, chunk,
                  stride_ub, stride_ul, stride_bb, stride_bl,
                  SB: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
                  REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr,
                  FOR_BACKWARD: tl.constexpr, EVEN_N: tl.constexpr):
    """Scan one chunk position by position. FOR_BACKWARD=False: start at zero, write the end state
    and sum(dt) per channel. FOR_BACKWARD=True: start at H_in[chunk], write the state at
    every SB-position super-block start (for the backward pass)."""
    tl.static_assert(SB % 2 == 0, "super-blocks of whole 2-position loop steps")
    bid, pid_d, cid, offs_d, mask_d, offs_n, mask_n, A2, bias, state = _program_block(
        A_ptr, bias_ptr, D, N, n_chunks, BD, BN, HAS_BIAS)
    if FOR_BACKWARD:
        h = _load_tile(h0_ptr + state, offs_n, offs_d, mask_d, N, D, BN, BD)
    else:
        h = tl.zeros((BN, BD), dtype=tl.float32)
    dt_total = tl.zeros((BD,), dtype=tl.float32)
    blocks = chunk // SB
    p = cid * chunk
    d0, u0, B0, _r0, m0, _b0 = _load_raw(u_ptr, dt_ptr, B_ptr, bid, p, L, offs_d, mask_d, offs_n,
                                         mask_n, stride_ub, stride_ul, stride_bb, stride_bl,
                                         REVERSE, EVEN_N)
    for k in range(blocks):
        if FOR_BACKWARD:
            _store_tile(tile_h_ptr + (state * blocks + k * N * D), h, offs_n, offs_d, mask_d, N,
                        D, BN)
        for j in range(SB // 2):
            h, dt2, d0, u0, B0, m0 = _state_pair(
                h, d0, u0, B0, m0, u_ptr, dt_ptr, B_ptr, bid, p, L, offs_d, mask_d, offs_n,
                mask_n, A2, bias, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE, SOFTPLUS,
                HAS_BIAS, EVEN_N)
            dt_total += dt2
            p += 2
    if not FOR_BACKWARD:
        _store_tile(hend_ptr + state, h, offs_n, offs_d, mask_d, N, D, BN)
        tl.store(dtsum_ptr + (bid * n_chunks + cid) * D + offs_d, dt_total, mask=mask_d)


@triton.jit(do_not_specialize=["n_chunks"])
def _pass_states(local_ptr, dtsum_ptr, A_ptr, init_ptr, out_ptr, final_ptr, D, N, n_chunks,
                 BLOCK: tl.constexpr, BACKWARD: tl.constexpr, HAS_INIT: tl.constexpr):
    """Sequential over chunks: out[c] = carry entering chunk c; carry = decay_c * carry + local[c].
    Forward runs c = 0..n-1 (states); BACKWARD runs c = n-1..0 (adjoints)."""
    bid = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D * N
    d = offs % D
    A2 = tl.load(A_ptr + offs, mask=mask, other=0.0) * LOG2E
    if HAS_INIT:
        carry = tl.load(init_ptr + bid * D * N + offs, mask=mask, other=0.0)
    else:
        carry = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(n_chunks):
        c = (n_chunks - 1 - i) if BACKWARD else i
        base = (bid * n_chunks + c) * D * N
        tl.store(out_ptr + base + offs, carry, mask=mask)
        s = tl.load(dtsum_ptr + (bid * n_chunks + c) * D + d, mask=mask, other=0.0)
        carry = tl.exp2(s * A2) * carry + tl.load(local_ptr + base + offs, mask=mask, other=0.0)
    tl.store(final_ptr + bid * D * N + offs, carry, mask=mask)


@triton.jit
def _load_fwd(u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, yadd_ptr, bid, p, L, offs_d, mask_d, offs_n,
              mask_n, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE: tl.constexpr,
              EVEN_N: tl.constexpr, HAS_Z: tl.constexpr, HAS_YADD: tl.constexpr):
    """_load_raw plus what the output step needs: the C row, z and yadd (0.0 when absent)."""
    delta, u, Bt, row, m, brow = _load_raw(u_ptr, dt_ptr, B_ptr, bid, p, L, offs_d, mask_d,
                                           offs_n, mask_n, stride_ub, stride_ul, stride_bb,
                                           stride_bl, REVERSE, EVEN_N)
    Ct = _load_row(C_ptr + brow + offs_n, mask_n, EVEN_N)
    if HAS_Z:
        zt = tl.load(z_ptr + row + offs_d, mask=m, other=0.0)
    else:
        zt = 0.0
    if HAS_YADD:
        yadd = tl.load(yadd_ptr + row + offs_d, mask=m, other=0.0)
    else:
        yadd = 0.0
    return delta, u, Bt, Ct, zt, yadd, row, m


@triton.jit
def _output_step(h, delta, u, Bt, Ct, zt, yadd, row, m, A2, bias, Dskip, ypre_ptr, y_ptr, offs_d,
                 SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr,
                 HAS_YADD: tl.constexpr, STORE_YPRE: tl.constexpr):
    """One position of the output scan: step the state, write y (and ypre); returns the state."""
    h, _dt, _a = _state_step(h, delta, u, Bt, m, A2, bias, SOFTPLUS, HAS_BIAS)
    y = tl.sum(h * Ct[:, None], axis=0) + Dskip * u.to(tl.float32)  # (BD,)
    if HAS_YADD:
        y += yadd
    if STORE_YPRE:
        tl.store(ypre_ptr + row + offs_d, y.to(ypre_ptr.dtype.element_ty), mask=m)
    if HAS_Z:
        zt = zt.to(tl.float32)
        y = y * zt * tl.sigmoid(zt)
    tl.store(y_ptr + row + offs_d, y.to(y_ptr.dtype.element_ty), mask=m)
    return h


@triton.jit(do_not_specialize=["L", "n_chunks"])
def _chunk_scan_fwd(u_ptr, dt_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, Dskip_ptr, z_ptr, h_in_ptr,
                    yadd_ptr, ypre_ptr, y_ptr, L, D, N, n_chunks, chunk,
                    stride_ub, stride_ul, stride_bb, stride_bl,
                    BD: tl.constexpr, BN: tl.constexpr,
                    REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr,
                    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_YADD: tl.constexpr,
                    STORE_YPRE: tl.constexpr, EVEN_N: tl.constexpr, SB: tl.constexpr):
    """y for one chunk from its true start state, position by position: one exp per state, the
    only loop-carried dependency one FMA. yadd (fp32) is added before gating (the other direction
    of a bidirectional layer); ypre stores the pre-gate sum for the backward pass. Two positions
    per step, loaded as in _chunk_states, in super-blocks of SB positions."""
    tl.static_assert(SB % 2 == 0, "super-blocks of whole 2-position loop steps")
    bid, pid_d, cid, offs_d, mask_d, offs_n, mask_n, A2, bias, state = _program_block(
        A_ptr, bias_ptr, D, N, n_chunks, BD, BN, HAS_BIAS)
    Dskip = tl.load(Dskip_ptr + offs_d, mask=mask_d, other=0.0) if HAS_D else 0.0
    h = _load_tile(h_in_ptr + state, offs_n, offs_d, mask_d, N, D, BN, BD)
    p = cid * chunk
    d0, u0, B0, C0, z0, ya0, r0, m0 = _load_fwd(
        u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, yadd_ptr, bid, p, L, offs_d, mask_d, offs_n, mask_n,
        stride_ub, stride_ul, stride_bb, stride_bl, REVERSE, EVEN_N, HAS_Z, HAS_YADD)
    for k in range(chunk // SB):
        for j in range(SB // 2):
            d1, u1, B1, C1, z1, ya1, r1, m1 = _load_fwd(
                u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, yadd_ptr, bid, p + 1, L, offs_d, mask_d,
                offs_n, mask_n, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE, EVEN_N, HAS_Z,
                HAS_YADD)
            h = _output_step(h, d0, u0, B0, C0, z0, ya0, r0, m0, A2, bias, Dskip, ypre_ptr,
                             y_ptr, offs_d, SOFTPLUS, HAS_BIAS, HAS_Z, HAS_YADD, STORE_YPRE)
            d0, u0, B0, C0, z0, ya0, r0, m0 = _load_fwd(
                u_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, yadd_ptr, bid, p + 2, L, offs_d, mask_d,
                offs_n, mask_n, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE, EVEN_N, HAS_Z,
                HAS_YADD)
            h = _output_step(h, d1, u1, B1, C1, z1, ya1, r1, m1, A2, bias, Dskip, ypre_ptr,
                             y_ptr, offs_d, SOFTPLUS, HAS_BIAS, HAS_Z, HAS_YADD, STORE_YPRE)
            p += 2


@triton.jit
def _adjoint_step(g, delta, dy, Ct, m, A2, bias, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """ghat handed to the position before: a_t (C_t dy_t + ghat)."""
    dt = _dt_from_raw(delta, m, bias, SOFTPLUS, HAS_BIAS)
    return tl.exp2(dt[None, :] * A2) * (Ct[:, None] * dy.to(tl.float32)[None, :] + g)


@triton.jit(do_not_specialize=["L", "n_chunks"])
def _chunk_adjoints(dt_ptr, bias_ptr, A_ptr, C_ptr, dy_ptr, gloc_ptr, L, D, N, n_chunks, chunk,
                    stride_ub, stride_ul, stride_bb, stride_bl,
                    BD: tl.constexpr, BN: tl.constexpr,
                    REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_BIAS: tl.constexpr,
                    EVEN_N: tl.constexpr, SB: tl.constexpr):
    """ghat = a_t (C_t dy_t + ghat) walked from the chunk end to its start from zero: the
    chunk's contribution to the adjoint handed to the previous chunk. Two positions per step,
    loaded as in _chunk_states, in super-blocks of SB positions (the last step's look-ahead
    re-reads position 0, unused)."""
    tl.static_assert(SB % 2 == 0, "super-blocks of whole 2-position loop steps")
    bid, pid_d, cid, offs_d, mask_d, offs_n, mask_n, A2, bias, state = _program_block(
        A_ptr, bias_ptr, D, N, n_chunks, BD, BN, HAS_BIAS)
    g = tl.zeros((BN, BD), dtype=tl.float32)
    # C plays B's part in the raw loader; dy stands in for u
    p = cid * chunk + chunk - 1
    d0, dy0, C0, _r0, m0, _b0 = _load_raw(dy_ptr, dt_ptr, C_ptr, bid, p, L, offs_d, mask_d,
                                          offs_n, mask_n, stride_ub, stride_ul, stride_bb,
                                          stride_bl, REVERSE, EVEN_N)
    for k in range(chunk // SB):
        for j in range(SB // 2):
            d1, dy1, C1, _r1, m1, _b1 = _load_raw(dy_ptr, dt_ptr, C_ptr, bid, p - 1, L, offs_d,
                                                  mask_d, offs_n, mask_n, stride_ub, stride_ul,
                                                  stride_bb, stride_bl, REVERSE, EVEN_N)
            g = _adjoint_step(g, d0, dy0, C0, m0, A2, bias, SOFTPLUS, HAS_BIAS)
            d0, dy0, C0, _r0, m0, _b0 = _load_raw(dy_ptr, dt_ptr, C_ptr, bid,
                                                  tl.maximum(p - 2, 0), L, offs_d, mask_d,
                                                  offs_n, mask_n, stride_ub, stride_ul, stride_bb,
                                                  stride_bl, REVERSE, EVEN_N)
            g = _adjoint_step(g, d1, dy1, C1, m1, A2, bias, SOFTPLUS, HAS_BIAS)
            p -= 2
    _store_tile(gloc_ptr + state, g, offs_n, offs_d, mask_d, N, D, BN)


@triton.jit
def _shfl_xor(x, bit: tl.constexpr):
    """Each lane's value of x from lane ^ bit (a warp butterfly shuffle; GPU only)."""
    return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, $2, 0x1f, -1;", "=f,f,r",
                                     [x, tl.full(x.shape, bit, tl.int32)], dtype=tl.float32,
                                     is_pure=True, pack=1)


@triton.jit
def _halve_lanes(x, lane, bit: tl.constexpr):
    """One level of _lane_sum_scatter: lanes with ``bit`` set keep the upper half of the rows,
    the others the lower half; each adds its partner's copy of the half it keeps."""
    if x.shape[0] == 1:
        out = x + _shfl_xor(x, bit)
    else:
        lo, hi = tl.split(tl.permute(tl.reshape(x, (2, x.shape[0] // 2, 32)), (1, 2, 0)))
        upper = ((lane & bit) != 0)[None, :]
        out = tl.where(upper, hi, lo) + _shfl_xor(tl.where(upper, lo, hi), bit)
    return out


@triton.jit
def _lane_sum_scatter(x, lane):
    """Sum an (R, 32) tile over its 32 lanes (one warp, lane = column) by recursive halving:
    R - 1 + 5 - log2(R) shuffles in all instead of 5 R for a tree per row. Returns (32,): lane l
    holds the sum of row l // (32 / R)."""
    x = _halve_lanes(x, lane, 16)
    x = _halve_lanes(x, lane, 8)
    x = _halve_lanes(x, lane, 4)
    x = _halve_lanes(x, lane, 2)
    x = _halve_lanes(x, lane, 1)
    return tl.reshape(x, (32,))


@triton.jit
def _grad_step(h, ghat, dA_acc, dD_acc, dbias_acc, delta, u, Bt, Ct, dy, row, m, dt, a, A2, bias,
               Dskip, du_ptr, ddelta_ptr, dB_part_ptr, dC_part_ptr, bid, pid_d, n_dblocks, p, L, N,
               offs_d, offs_n, mask_n, REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr,
               HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, LANE_SUMS: tl.constexpr):
    """Gradients at position p from h = h_p, ghat = the adjoint handed back from p + 1, the
    position's loads and its dt and decay a (computed once, when its state was recomputed);
    returns the adjoint handed to p - 1 and the updated dA, dD, delta_bias accumulators."""
    u = u.to(tl.float32)
    dy = dy.to(tl.float32)
    g = Ct[:, None] * dy[None, :] + ghat  # dL/dh_p
    dtu = dt * u
    ah = h - dtu[None, :] * Bt[:, None]  # a_p * h_{p-1}, without dividing by a_p
    gB = tl.sum(g * Bt[:, None], axis=0)
    du = dt * gB
    gah = g * ah  # shared by ddt and dA
    ddt = u * gB + LN2 * tl.sum(gah * A2, axis=0)
    if HAS_D:
        du += Dskip * dy
        dD_acc += dy * u
    if SOFTPLUS:
        raw = delta.to(tl.float32)  # d softplus(x) / dx = sigmoid(x), x = delta + bias
        if HAS_BIAS:
            raw += bias
        ddt = ddt * tl.sigmoid(raw)
    dbias_acc += tl.where(m, ddt, 0.0)  # past L, ddt is not 0 (ghat may carry dfinal)
    tl.store(du_ptr + row + offs_d, du.to(du_ptr.dtype.element_ty), mask=m)
    tl.store(ddelta_ptr + row + offs_d, ddt.to(ddelta_ptr.dtype.element_ty), mask=m)
    # per-block partials of dB, dC (summed over channel blocks by the caller in a fixed order)
    t = tl.where(p < L, (L - 1 - p) if REVERSE else p, 0).to(tl.int64)
    part = ((bid * L + t) * n_dblocks + pid_d) * N
    if LANE_SUMS:  # BD == 32 lanes of one warp, BN == N: each sum ends in 32 / N lanes
        lane = offs_d % 32
        per_row: tl.constexpr = 32 // offs_n.shape[0]  # lanes that end up holding one sum
        mine = (lane % per_row == 0) & (offs_d * 0 + p < L)
        row = lane // per_row
        tl.store(dB_part_ptr + part + row, _lane_sum_scatter(g * dtu[None, :], lane), mask=mine)
        tl.store(dC_part_ptr + part + row, _lane_sum_scatter(h * dy[None, :], lane), mask=mine)
    else:
        mpn = mask_n & (offs_n * 0 + p < L)
        tl.store(dB_part_ptr + part + offs_n, tl.sum(g * dtu[None, :], axis=1), mask=mpn)
        tl.store(dC_part_ptr + part + offs_n, tl.sum(h * dy[None, :], axis=1), mask=mpn)
    dA_acc += gah * dt[None, :]
    return a * g, dA_acc, dD_acc, dbias_acc


@triton.jit(do_not_specialize=["L", "n_chunks"])
def _chunk_scan_bwd(u_ptr, dt_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, Dskip_ptr, dy_ptr, tile_h_ptr,
                    slot_ptr, g_in_ptr, du_ptr, ddelta_ptr, dB_part_ptr, dC_part_ptr, dA_part_ptr,
                    dD_part_ptr, dbias_part_ptr, L, D, N, n_chunks, chunk, n_dblocks,
                    stride_ub, stride_ul, stride_bb, stride_bl,
                    GROUPS: tl.constexpr, BD: tl.constexpr,
                    BN: tl.constexpr, REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, EVEN_N: tl.constexpr,
                    LANE_SUMS: tl.constexpr):
    """Backward of one chunk, super-block (GROUPS groups of two positions) by super-block from
    the end. Per super-block: walk forward from its saved start state, keeping the state before
    each group in this program's slots; then per group from the last: recompute its two states
    into registers and step the adjoint back over them. The walk takes _chunk_states' steps;
    each group's loads (dy standing in for z in _load_fwd) are issued while the group after it
    is computed, and reused by the recompute and the gradients, which share dt and the decay."""
    bid, pid_d, cid, offs_d, mask_d, offs_n, mask_n, A2, bias, state = _program_block(
        A_ptr, bias_ptr, D, N, n_chunks, BD, BN, HAS_BIAS)
    Dskip = tl.load(Dskip_ptr + offs_d, mask=mask_d, other=0.0) if HAS_D else 0.0
    ghat = _load_tile(g_in_ptr + state, offs_n, offs_d, mask_d, N, D, BN, BD)
    dA_acc = tl.zeros((BN, BD), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    SB: tl.constexpr = 2 * GROUPS
    blocks = chunk // SB
    slots = slot_ptr + state * GROUPS
    # Group load sets: e = delta, v = u, F = B row, G = C row, dy, s = row offset, n = mask; the
    # next group's set is x, w, P, Q, dz, r, q. Names differ from the walk's (d, u, B, ...), which
    # Triton would otherwise carry through the group loop as loop variables.
    p = cid * chunk + chunk  # the loads of the chunk's last group (positions p - 2, p - 1)
    e0, v0, F0, G0, dy0, _y0, s0, n0 = _load_fwd(
        u_ptr, dt_ptr, B_ptr, C_ptr, dy_ptr, None, bid, p - 2, L, offs_d, mask_d, offs_n, mask_n,
        stride_ub, stride_ul, stride_bb, stride_bl, REVERSE, EVEN_N, True, False)
    e1, v1, F1, G1, dy1, _y1, s1, n1 = _load_fwd(
        u_ptr, dt_ptr, B_ptr, C_ptr, dy_ptr, None, bid, p - 1, L, offs_d, mask_d, offs_n, mask_n,
        stride_ub, stride_ul, stride_bb, stride_bl, REVERSE, EVEN_N, True, False)
    for kb in range(blocks):
        k = blocks - 1 - kb
        h = _load_tile(tile_h_ptr + (state * blocks + k * N * D), offs_n, offs_d, mask_d, N, D,
                       BN, BD)
        p = cid * chunk + k * SB
        d0, u0, B0, _r0, m0, _b0 = _load_raw(u_ptr, dt_ptr, B_ptr, bid, p, L, offs_d, mask_d,
                                             offs_n, mask_n, stride_ub, stride_ul, stride_bb,
                                             stride_bl, REVERSE, EVEN_N)
        for grp in range(GROUPS):
            _store_tile(slots + grp * N * D, h, offs_n, offs_d, mask_d, N, D, BN)
            h, _dt2, d0, u0, B0, m0 = _state_pair(
                h, d0, u0, B0, m0, u_ptr, dt_ptr, B_ptr, bid, p, L, offs_d, mask_d, offs_n,
                mask_n, A2, bias, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE, SOFTPLUS,
                HAS_BIAS, EVEN_N)
            p += 2
        tl.debug_barrier()  # slot rows written by one lane may be read by its replicas (BD < 32)
        for gb in range(GROUPS):
            p -= 2  # this group: positions p (set 0) and p + 1 (set 1)
            h = _load_tile(slots + (GROUPS - 1 - gb) * N * D, offs_n, offs_d, mask_d, N, D, BN,
                           BD)
            h0, dt0, a0 = _state_step(h, e0, v0, F0, n0, A2, bias, SOFTPLUS, HAS_BIAS)
            h1, dt1, a1 = _state_step(h0, e1, v1, F1, n1, A2, bias, SOFTPLUS, HAS_BIAS)
            # the group before (in the previous super-block or chunk for the first group: the
            # last group of the next super-block, or unused; clamped at position 0)
            x0, w0, P0, Q0, dz0, _z0, r0, q0 = _load_fwd(
                u_ptr, dt_ptr, B_ptr, C_ptr, dy_ptr, None, bid, tl.maximum(p - 2, 0), L, offs_d,
                mask_d, offs_n, mask_n, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE,
                EVEN_N, True, False)
            x1, w1, P1, Q1, dz1, _z1, r1, q1 = _load_fwd(
                u_ptr, dt_ptr, B_ptr, C_ptr, dy_ptr, None, bid, tl.maximum(p - 1, 0), L, offs_d,
                mask_d, offs_n, mask_n, stride_ub, stride_ul, stride_bb, stride_bl, REVERSE,
                EVEN_N, True, False)
            ghat, dA_acc, dD_acc, dbias_acc = _grad_step(
                h1, ghat, dA_acc, dD_acc, dbias_acc, e1, v1, F1, G1, dy1, s1, n1, dt1, a1, A2,
                bias, Dskip, du_ptr, ddelta_ptr, dB_part_ptr, dC_part_ptr, bid, pid_d, n_dblocks,
                p + 1, L, N, offs_d, offs_n, mask_n, REVERSE, SOFTPLUS, HAS_BIAS, HAS_D,
                LANE_SUMS)
            ghat, dA_acc, dD_acc, dbias_acc = _grad_step(
                h0, ghat, dA_acc, dD_acc, dbias_acc, e0, v0, F0, G0, dy0, s0, n0, dt0, a0, A2,
                bias, Dskip, du_ptr, ddelta_ptr, dB_part_ptr, dC_part_ptr, bid, pid_d, n_dblocks,
                p, L, N, offs_d, offs_n, mask_n, REVERSE, SOFTPLUS, HAS_BIAS, HAS_D, LANE_SUMS)
            e0, v0, F0, G0, dy0, s0, n0 = x0, w0, P0, Q0, dz0, r0, q0
            e1, v1, F1, G1, dy1, s1, n1 = x1, w1, P1, Q1, dz1, r1, q1
        tl.debug_barrier()  # the next super-block rewrites the slots
    _store_tile(dA_part_ptr + state, dA_acc, offs_n, offs_d, mask_d, N, D, BN)
    if HAS_D:
        tl.store(dD_part_ptr + (bid * n_chunks + cid) * D + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_part_ptr + (bid * n_chunks + cid) * D + offs_d, dbias_acc, mask=mask_d)


@triton.jit
def _gate_fwd(ypre_ptr, z_ptr, out_ptr, numel, BLOCK: tl.constexpr):
    """out = ypre * silu(z), elementwise over the flat tensors, in out's dtype."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    ypre = tl.load(ypre_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (ypre * z * tl.sigmoid(z)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gate_bwd(dout_ptr, z_ptr, ypre_ptr, dy_ptr, dz_ptr, numel, BLOCK: tl.constexpr,
              WRITE_DY: tl.constexpr, WRITE_DZ: tl.constexpr):
    """Backward of out = ypre * silu(z), elementwise over the flat tensors: dy = dout silu(z)
    (in dy's dtype: see op.gate_backward) and dz in z's dtype, each only when asked."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    dout = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(z)
    if WRITE_DY:
        tl.store(dy_ptr + offs, (dout * z * sig).to(dy_ptr.dtype.element_ty), mask=mask)
    if WRITE_DZ:
        ypre = tl.load(ypre_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dz = dout * ypre * sig * (1.0 + z * (1.0 - sig))
        tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
