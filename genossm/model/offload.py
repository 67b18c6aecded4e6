"""Per-block checkpoints kept in pinned host memory (``GenoSSMConfig.checkpointing = "offload"``).

Plain per-block checkpointing keeps every block's input on the GPU: n_layer x (B, L, width)
float32, 16 GiB at 1M bases for the reference model, more than one block's working set. Here each
block runs without autograd in forward and its input is copied to pinned host memory on a side
stream while the next block runs; backward walks the blocks in reverse, bringing block i-1's input
back while block i is recomputed and differentiated. The GPU then holds one block's working set
and a few block inputs whatever n_layer is; the host holds n_layer block inputs. A forward pass
waits for the copy of the input saved ``MAX_PENDING`` blocks earlier before going on, so copies
that fall behind the compute cannot pile device memory up.
Off CUDA the inputs stay where they are (same recompute schedule, nothing to copy).
Blocks must be deterministic functions of their input (no dropout): the recompute does not
replay RNG state.
"""

from collections import deque

import torch

MAX_PENDING = 2  # device block inputs whose copy to the host may still be running
_copy_streams: dict[torch.device, torch.cuda.Stream] = {}


def _copy_stream(device: torch.device) -> "torch.cuda.Stream":
    """One side stream per GPU for all host <-> device checkpoint copies (they stay ordered)."""
    if device not in _copy_streams:
        _copy_streams[device] = torch.cuda.Stream(device)
    return _copy_streams[device]


class HostCheckpoints:
    """The block inputs of one forward pass, by block index."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = _copy_stream(device) if device.type == "cuda" else None
        self.saved = {}    # index -> pinned host copy (off CUDA: the input itself)
        self.fetched = {}  # index -> (device tensor, event marking the end of its copy)
        # (device tensor, event marking the end of its copy to the host): a tensor is held here,
        # not handed to the allocator with record_stream, so that it is freed at a known point
        self.pending = deque()

    def save(self, index: int, tensor: torch.Tensor):
        if self.stream is None:
            self.saved[index] = tensor
            return
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # tensor is written
        with torch.cuda.stream(self.stream):
            host.copy_(tensor, non_blocking=True)
            self.pending.append((tensor, self.stream.record_event()))
        self.saved[index] = host
        self._release(MAX_PENDING)

    def _release(self, keep: int):
        """Drop the device tensors of all but the last ``keep`` pending copies, each once its copy
        is done (the host waits for it)."""
        while len(self.pending) > keep:
            _, copied = self.pending.popleft()
            copied.synchronize()

    def _fetch(self, index: int):
        host = self.saved.pop(index)
        tensor = torch.empty(host.shape, dtype=host.dtype, device=self.device)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # its memory is free
        with torch.cuda.stream(self.stream):
            tensor.copy_(host, non_blocking=True)
            self.fetched[index] = (tensor, self.stream.record_event())

    def load(self, index: int) -> torch.Tensor:
        """Block ``index``'s input on the device; starts bringing back block ``index - 1``'s."""
        if self.stream is None:
            return self.saved.pop(index)
        self._release(0)
        if index not in self.fetched:
            self._fetch(index)
        tensor, copied = self.fetched.pop(index)
        torch.cuda.current_stream(self.device).wait_event(copied)
        if index - 1 in self.saved:
            self._fetch(index - 1)
        return tensor


def _autocast_state(device_type: str) -> dict:
    return {"device_type": device_type, "enabled": torch.is_autocast_enabled(device_type),
            "dtype": torch.get_autocast_dtype(device_type),
            "cache_enabled": torch.is_autocast_cache_enabled()}


class _OffloadedBlock(torch.autograd.Function):
    """out = block(hidden); keeps only ``hidden`` (in ``checkpoints``) for backward. The block's
    parameters are inputs so that their gradients flow through the main graph (DDP's hooks)."""

    @staticmethod
    def forward(ctx, block, checkpoints, index, hidden, *params):
        ctx.block, ctx.checkpoints, ctx.index = block, checkpoints, index
        ctx.autocast = _autocast_state(hidden.device.type)
        out = block(hidden)  # autograd is off inside Function.forward
        checkpoints.save(index, hidden)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden = ctx.checkpoints.load(ctx.index).detach().requires_grad_(True)
        params = list(ctx.block.parameters())
        wanted = [hidden] + [p for p in params if p.requires_grad]
        with torch.enable_grad(), torch.autocast(**ctx.autocast):
            out = ctx.block(hidden)
        # Backward needs the graph behind out, not its values (the residual add saves nothing):
        # free them now rather than after the block's backward (1 GiB per million bases).
        out.untyped_storage().resize_(0)
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        grad_hidden = next(grads)
        return (None, None, None, grad_hidden,
                *(next(grads) if p.requires_grad else None for p in params))


def offloaded_block(block: torch.nn.Module, checkpoints: HostCheckpoints, index: int,
                    hidden: torch.Tensor) -> torch.Tensor:
    """``block(hidden)``, recomputed in backward from the input saved in ``checkpoints``."""
    return _OffloadedBlock.apply(block, checkpoints, index, hidden, *block.parameters())
