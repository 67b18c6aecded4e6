"""Plain PyTorch references for the selective scan (Mamba-1 "S6"), layout (batch, length, channels).

Semantics, defined once here (per batch b, channel d, state n, time t):

    dt_t  = delta_t + delta_bias            (then softplus if delta_softplus)
    h_t   = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B_t[n] * u_t        h_{-1} = initial_state
    y_t   = sum_n C_t[n] * h_t[n] + D[d] * u_t
    y_t  *= silu(z_t)                       (if z is given)

``reverse=True`` runs t = L-1 down to 0 (``initial_state`` enters at the end; the final state is
the one after t = 0). State and accumulation are float32 (float64 when the inputs are float64).

* :func:`selective_scan_naive` steps one position at a time: obviously right, for tests only.
* :func:`selective_scan_ref` works chunk by chunk with a log-depth (Hillis-Steele) scan inside each
  chunk: no per-position Python loop and never a (batch, L, D, N) tensor, so it serves as the
  vectorized CPU path of the model and as the reference for long sequences on the GPU.
"""

import torch
import torch.nn.functional as F


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus, initial_state):
    """Upcast to the accumulation dtype; returns (dt, u, A, B, C, h0) with h0 (b, d, n)."""
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    dt = delta.to(acc)
    if delta_bias is not None:
        dt = dt + delta_bias.to(acc)
    if delta_softplus:
        dt = F.softplus(dt)
    batch, _, dim = u.shape
    if initial_state is None:
        h0 = torch.zeros(batch, dim, A.shape[1], dtype=acc, device=u.device)
    else:
        h0 = initial_state.to(acc)
    return dt, u.to(acc), A.to(acc), B.to(acc), C.to(acc), h0


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + u * D.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan_naive(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         initial_state=None, return_final_state=False, reverse=False):
    """One step per position. u, delta, z: (b, L, d); B, C: (b, L, n); A: (d, n)."""
    dt, uu, AA, BB, CC, h = _prepare(u, delta, A, B, C, delta_bias, delta_softplus, initial_state)
    batch, length, dim = u.shape
    ys = [None] * length
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        a = torch.exp(dt[:, t, :, None] * AA)  # (b, d, n)
        h = a * h + (dt[:, t] * uu[:, t])[:, :, None] * BB[:, t, None, :]
        ys[t] = (h * CC[:, t, None, :]).sum(-1)
    y = _finish(torch.stack(ys, dim=1), uu, D, z, u.dtype)
    return (y, h if h.dtype == torch.float64 else h.float()) if return_final_state else y


def _scan_pairs(a, b):
    """Inclusive scan of h_t = a_t * h_{t-1} + b_t along dim 1 from h = 0, in log2(T) steps.

    Returns (prod_{s<=t} a_s, h_t); both (b, T, d, n).
    """
    step = 1
    length = a.shape[1]
    while step < length:
        b = torch.cat([b[:, :step], a[:, step:] * b[:, :-step] + b[:, step:]], dim=1)
        a = torch.cat([a[:, :step], a[:, step:] * a[:, :-step]], dim=1)
        step *= 2
    return a, b


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, return_final_state=False, reverse=False, chunk_size=16):
    """Chunked, vectorized reference with the same semantics as :func:`selective_scan_naive`.

    Memory is O(batch * chunk_size * d * n) per chunk (plus autograd's saved tensors).
    """
    dt, uu, AA, BB, CC, h = _prepare(u, delta, A, B, C, delta_bias, delta_softplus, initial_state)
    batch, length, dim = u.shape
    starts = list(range(0, length, chunk_size))
    if reverse:
        starts.reverse()
    ys = []
    for s in starts:
        e = min(s + chunk_size, length)
        dt_c, u_c, B_c, C_c = dt[:, s:e], uu[:, s:e], BB[:, s:e], CC[:, s:e]
        if reverse:  # process the chunk last-to-first; small per-chunk copies only
            dt_c, u_c, B_c, C_c = dt_c.flip(1), u_c.flip(1), B_c.flip(1), C_c.flip(1)
        a = torch.exp(dt_c[..., None] * AA)  # (b, T, d, n)
        b = (dt_c * u_c)[..., None] * B_c[:, :, None, :]
        cum_a, h_local = _scan_pairs(a, b)
        h_all = h_local + cum_a * h[:, None]  # (b, T, d, n)
        y_c = torch.einsum("btdn,btn->btd", h_all, C_c)
        ys.append(y_c.flip(1) if reverse else y_c)
        h = h_all[:, -1]
    if reverse:
        ys.reverse()
    y = torch.cat(ys, dim=1) if ys else uu.new_zeros(batch, 0, dim)
    y = _finish(y, uu, D, z, u.dtype)
    return (y, h if h.dtype == torch.float64 else h.float()) if return_final_state else y
