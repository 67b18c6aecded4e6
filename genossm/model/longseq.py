"""Inference over sequences longer than any window, with flat device memory.

A deep bidirectional model cannot stream left to right in one pass: layer l at position i needs
layer l-1's reverse scan from the sequence end. So the schedule is layer by layer, over a host
buffer H (L, d) that holds the residual stream (host memory O(L x d_model); pass ``buffer_path``
to back it with a file on disk for sequences beyond host RAM). For each layer:

1. left to right, chunk by chunk: run only the forward-direction scan, carrying its state (and
   the conv's K-1 positions of halo), and keep the state at every chunk start (tiny);
2. right to left, chunk by chunk: recompute the forward scan of the chunk from its saved start
   state, run the reverse scan carrying its state, gate, project, and write the block's output over
   H in place (the right-hand conv halo is kept from the chunk before it is overwritten).

Device memory is O(chunk x d_inner) whatever the length. The result equals one full pass of the
model up to float rounding (tests check several chunk sizes, smaller than the conv width too).
Linear sequences only: positions past either end are zeros, as in a full pass.

Every chunk crosses the host link twice per layer, so on CUDA the copies go through pinned
staging buffers (``_HostRows``): full link bandwidth, and a chunk's write-back to H finishes
while the next chunk computes.
"""

import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from genossm.kernels import selective_scan
from genossm.model.conv import anticausal_conv, causal_conv
from genossm.model.genossm import GenoSSM


def _host_buffer(length, width, dtype, buffer_path):
    if buffer_path is None:
        return torch.empty(length, width, dtype=dtype)
    return torch.from_file(str(buffer_path), shared=True, size=length * width,
                           dtype=dtype).view(length, width)


class _HostRows:
    """Row copies between a host buffer (L, W) and the device. On CUDA through pinned staging
    buffers: a read is one memcpy into pinned memory and one asynchronous host-to-device copy; a
    write is an asynchronous device-to-host copy into one of two pinned buffers that lands in the
    host buffer at a later write or at ``flush()``, so the CPU copy overlaps the next chunk's
    compute. Rows being written must not be read before ``flush()`` (the schedule never does)."""

    def __init__(self, buffer, rows, device, dtype):
        self.buffer, self.device, self.dtype = buffer, device, dtype
        self.staged = device.type == "cuda"
        if self.staged:
            self.read_stage, self.read_done = self._stage(rows), None
            self.write_stages = [self._stage(rows), self._stage(rows)]
            self.pending = [None, None]  # per write stage: (copy-done event, start, stop)
            self.next_write = 0

    def _stage(self, rows):
        return torch.empty(rows, self.buffer.shape[1], dtype=self.buffer.dtype, pin_memory=True)

    def read(self, start, stop):
        """Rows [start, stop) on the device in the compute dtype, (n, W)."""
        rows = self.buffer[start:stop]
        if not self.staged:
            return rows.to(device=self.device, dtype=self.dtype)
        if self.read_done is not None:  # the previous read's copy still reads the stage
            self.read_done.synchronize()
        if stop - start > self.read_stage.shape[0]:  # a conv halo longer than the chunk
            self.read_stage = self._stage(stop - start)
        stage = self.read_stage[:stop - start]
        stage.copy_(rows)
        out = stage.to(self.device, non_blocking=True)
        self.read_done = torch.cuda.Event()
        self.read_done.record(torch.cuda.current_stream(self.device))
        return out.to(self.dtype)

    def write(self, start, rows):
        """Device rows (n, W) -> buffer[start:start + n]."""
        stop = start + rows.shape[0]
        if not self.staged:
            self.buffer[start:stop] = rows.to(self.buffer.dtype).cpu()
            return
        i = self.next_write
        self._land(i)
        self.write_stages[i][:stop - start].copy_(rows.to(self.buffer.dtype), non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        self.pending[i] = (done, start, stop)
        self.next_write = 1 - i

    def flush(self):
        if self.staged:
            for i in (self.next_write, 1 - self.next_write):  # oldest first
                self._land(i)

    def _land(self, i):
        if self.pending[i] is not None:
            done, start, stop = self.pending[i]
            done.synchronize()
            self.buffer[start:stop] = self.write_stages[i][:stop - start]
            self.pending[i] = None


def _x_rows(block, rows):
    """x (pre-conv input of both scans) for device residual rows (n, W) -> (1, n, E)."""
    return block.mixer.x_projection(block.norm(rows[None]))


def _scan_direction(direction, u, reverse, initial_state):
    delta, B, C = direction.scan_inputs(u)
    A, D, bias = direction.scan_params()
    return selective_scan(u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True,
                          initial_state=initial_state, return_final_state=True, reverse=reverse)


def _run_block(block, H, io, chunk, device, dtype):
    length = H.shape[0]
    halo = block.mixer.fwd.conv_weight.shape[1] - 1
    fwd, rev = block.mixer.fwd, block.mixer.rev
    starts = list(range(0, length, chunk))
    width = block.mixer.out_proj.in_features

    def left_halo(s):  # x of the halo positions before s, zero-padded at the sequence start
        x = _x_rows(block, io.read(max(0, s - halo), s))
        return F.pad(x, (0, 0, halo - x.shape[1], 0)) if halo else None

    state = None
    fwd_states = []
    for s in starts:
        fwd_states.append(state)
        x = _x_rows(block, io.read(s, min(s + chunk, length)))
        u = F.silu(causal_conv(x, fwd.conv_weight, fwd.conv_bias, halo_left=left_halo(s)))
        _, state = _scan_direction(fwd, u, False, state)

    state_r = None
    right = torch.zeros(1, 0, width, device=device, dtype=dtype)  # x just right of the chunk
    for s, start_state in zip(reversed(starts), reversed(fwd_states)):
        e = min(s + chunk, length)
        h = io.read(s, e)  # copied in once for the norm and the residual
        normed = block.norm(h[None])
        x, z = block.mixer.x_projection(normed), block.mixer.z_projection(normed)
        u_f = F.silu(causal_conv(x, fwd.conv_weight, fwd.conv_bias, halo_left=left_halo(s)))
        y_f, _ = _scan_direction(fwd, u_f, False, start_state)
        halo_right = F.pad(right, (0, 0, 0, halo - right.shape[1])) if halo else None
        u_r = F.silu(anticausal_conv(x, rev.conv_weight, rev.conv_bias, halo_right=halo_right))
        y_r, state_r = _scan_direction(rev, u_r, True, state_r)
        out = block.mixer.out_proj(((y_f.float() + y_r.float()) * F.silu(z.float())).to(dtype))
        right = torch.cat([x, right], dim=1)[:, :halo]
        io.write(s, h + out[0])
    io.flush()


@torch.no_grad()
def long_forward(model: GenoSSM, input_ids, chunk_size: int = 1 << 20, device=None,
                 dtype=torch.float32, output: str = "logits", layer: int | None = None,
                 buffer_dtype=torch.float32, buffer_path=None, progress: bool = False):
    """Run ``model`` over one long sequence ``input_ids`` (L,) chunk by chunk; ``progress``: a bar
    on stderr counting blocks (each a pass over the whole sequence).

    ``output="logits"`` returns (L, vocab) float32 log-odds as ``model(ids[None])[0]`` would;
    ``output="hidden"`` returns the residual stream (L, d_model) after ``layer`` blocks
    (``layer=None``: after the last block and the final norm, like ``hidden_states[-1]``), in
    ``buffer_dtype``: the host buffer itself, so host memory is one L x d_model buffer.
    Results live in host memory; device memory stays O(chunk_size x d_inner). With ``dtype``
    bfloat16 or float16 the blocks run under autocast (weights as stored, activations in dtype).
    """
    if output not in ("logits", "hidden"):
        raise ValueError(f"output must be 'logits' or 'hidden', got {output!r}")
    device = torch.device(device or next(model.parameters()).device)
    ids = torch.as_tensor(input_ids).long().reshape(-1)
    half = dtype in (torch.bfloat16, torch.float16)
    n_blocks = len(model.layers) if layer is None else layer
    strands = 2 if model.config.rc_equivariant else 1
    bar = tqdm(total=n_blocks * strands, desc="long window", unit="block", file=sys.stderr,
               disable=not progress, dynamic_ncols=True, leave=False)
    with bar, torch.autocast(device.type, dtype=dtype if half else torch.bfloat16, enabled=half):
        if model.config.rc_equivariant:
            return _long_forward_rc(model, ids, chunk_size, device, dtype, output, layer,
                                    buffer_dtype, buffer_path, bar)
        return _trunk_long(model, ids, chunk_size, device, dtype, output, layer, buffer_dtype,
                           buffer_path, bar)


def _trunk_long(model, ids, chunk, device, dtype, output, layer, buffer_dtype, buffer_path, bar,
                head_weight=None):
    length, width = ids.shape[0], model.config.stream_width
    n_blocks = len(model.layers) if layer is None else layer
    H = _host_buffer(length, width, buffer_dtype, buffer_path)
    io = _HostRows(H, min(chunk, length), device, dtype)
    for s in range(0, length, chunk):
        io.write(s, model.embedding(ids[s:s + chunk].to(device)))
    io.flush()
    for block in model.layers[:n_blocks]:
        _run_block(block, H, io, chunk, device, dtype)
        bar.update()
    if output == "hidden" and n_blocks < len(model.layers):
        return H
    # after the last block: the final norm, then the head; hidden states are written over the
    # buffer (no second L x d_model copy)
    weight = model.embedding.weight if head_weight is None else head_weight
    if output == "hidden":
        result, out_io = H, io
    else:
        result = torch.empty(length, weight.shape[0])
        out_io = _HostRows(result, min(chunk, length), device, dtype)
    for s in range(0, length, chunk):
        h = model.norm_f(io.read(s, min(s + chunk, length)))
        if output == "logits":
            h = (h @ weight.t().to(dtype)).float()
        out_io.write(s, h)
    out_io.flush()
    return result


def _long_forward_rc(model, ids, chunk, device, dtype, output, layer, buffer_dtype, buffer_path, bar):
    """RC-equivariant model: the same trunk on the sequence and on its reverse complement."""
    comp = model.complement.cpu()
    rc_ids = comp[ids].flip(0)
    rc_path = None if buffer_path is None else f"{buffer_path}.rc"
    if output == "hidden":
        fwd = _trunk_long(model, ids, chunk, device, dtype, output, layer, buffer_dtype,
                          buffer_path, bar)
        rc = _trunk_long(model, rc_ids, chunk, device, dtype, output, layer, buffer_dtype, rc_path,
                         bar)
        return torch.cat([fwd.float(), rc.float().flip(0)], dim=-1)
    emb = model.embedding.weight
    fwd = _trunk_long(model, ids, chunk, device, dtype, output, layer, buffer_dtype, buffer_path,
                      bar)
    rc = _trunk_long(model, rc_ids, chunk, device, dtype, output, layer, buffer_dtype, rc_path,
                     bar, head_weight=emb[model.complement])
    return fwd + rc.flip(0)
