"""Forward passes of the model over windows, deduplicated, batched and read out.

A :class:`Pass` names one model input (a haplotype window, optionally with masked positions,
on one strand) and what to read from the output. Scores and embeddings are built from passes,
and what nearby variants can share is shared: identical passes are computed once (every ALT
at a site, duplicate records, and the reference side of all indels with the same span read
one pass per strand); each contig is loaded and tokenized once and windows are slices of it;
batches are formed from neighbouring windows. Passes are batched by (window length,
read-out), run on one device in a plain loop or, with ``devices > 1``, through Lightning
predict with DDP (:mod:`genossm.score.distributed`).

Read-outs, always in forward-strand coordinates of the window (a reverse-complement pass is
mapped back: positions flipped, bases complemented):
- ``("logp", offset, count)``: (count, 4) float32 log-probabilities of A, C, G, T at window
  positions [offset, offset + count), renormalized over the four bases;
- ``("mean", offset, count, layer)``: (d_model,) mean of ``hidden_states[layer]`` over those
  positions (count 1: the embedding of one base);
- ``("full", offset, count, layer)``: (count, d_model) per-base hidden states.

A window longer than ``max_window`` (a whole chromosome, say) runs alone through the layer-by-layer
schedule of :mod:`genossm.model.longseq` in ``max_window``-base chunks, with the same read-outs:
device memory then stays that of one chunk, and host memory grows as window x d_model.
"""

import sys
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch

from genossm.errors import GenossmError
from genossm.tokenize import MASK, reverse_complement

# Default tokens per batch: keeps activations of a 16-layer d_model-256 model well inside GPU memory.
TOKENS_PER_BATCH = {"cuda": 1 << 20, "cpu": 1 << 16}
MAX_WINDOW = 1 << 20  # longer windows run chunk by chunk (genossm.model.longseq)


@dataclass(frozen=True, slots=True)
class Pass:
    contig: str
    start: int  # window start on the reference, 0-based (may be < 0: PAD or wrap)
    length: int  # window length
    edit: tuple | None  # (p, ref_len, alt ids as bytes): haplotype edit, see Genome.haplotype
    mask: tuple | None  # (offset, count): window positions replaced by MASK
    strand: int  # +1 forward, -1 reverse complement
    read: tuple  # read-out, see the module docstring

    def tokens(self, genome) -> np.ndarray:
        """Model input ids (length,) uint8."""
        ids = genome.haplotype(self.contig, self.start, self.length, self.edit)
        if self.mask is not None:
            offset, count = self.mask
            ids[offset : offset + count] = MASK
        return reverse_complement(ids) if self.strand < 0 else ids

    def own_span(self) -> tuple:
        """(offset, count) of the read-out positions in the pass's own orientation."""
        offset, count = self.read[1], self.read[2]
        return (self.length - offset - count if self.strand < 0 else offset), count


class PassIndex:
    """Deduplicating list of passes: ``add`` returns the index of an identical pass if present."""

    def __init__(self):
        self.passes = []
        self._index = {}

    def add(self, p: Pass) -> int:
        index = self._index.get(p)
        if index is None:
            index = self._index[p] = len(self.passes)
            self.passes.append(p)
        return index

    def __len__(self):
        return len(self.passes)


def plan_batches(passes, batch_size: int, indices=None):
    """Index lists of homogeneous batches (same window length and read-out kind/layer), in
    contig/position order so that nearby windows run together; of the passes at ``indices``
    (all by default)."""
    def group(i):
        p = passes[i]
        return (p.length, p.read[0], p.read[3] if len(p.read) > 3 else None)

    indices = range(len(passes)) if indices is None else indices
    order = sorted(indices, key=lambda i: (group(i), passes[i].contig, passes[i].start, i))
    batches = []
    for _, members in groupby(order, key=group):
        members = list(members)
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    return batches


class PassBatches(torch.utils.data.Dataset):
    """One item per planned batch: input ids and what to read back, ready for :func:`run_batch`."""

    def __init__(self, passes, genome, batches):
        self.passes, self.genome, self.batches = passes, genome, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, b):
        members = [self.passes[i] for i in self.batches[b]]
        first = members[0]
        offsets, counts = zip(*(p.own_span() for p in members))
        return {  # only the ids go to the device; the rest stays plain Python
            "ids": torch.from_numpy(np.stack([p.tokens(self.genome) for p in members])),  # (B, L) uint8
            "index": list(self.batches[b]),
            "offset": list(offsets),
            "count": list(counts),
            "reverse": [p.strand < 0 for p in members],
            "kind": first.read[0],
            "layer": first.read[3] if len(first.read) > 3 else None,
        }


def run_batch(model, batch, device, dtype=None):
    """Run one batch; returns (pass indices, list of numpy read-outs)."""
    ids = batch["ids"].to(device, non_blocking=True).long()  # (B, L)
    kind, layer = batch["kind"], batch["layer"]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    with torch.inference_mode(), autocast:
        if kind == "logp":
            out = model(ids)  # (B, L, V)
        else:
            _, hidden = model(ids, output_hidden_states=True)
            out = hidden[layer]  # (B, L, D)
        results = [read_out(out[b], kind, batch["offset"][b], batch["count"][b], batch["reverse"][b])
                   for b in range(ids.shape[0])]
        flat = torch.cat([x.reshape(-1) for x in results]).cpu().numpy()  # one device->host copy
    pieces = np.split(flat, np.cumsum([x.numel() for x in results])[:-1])
    return batch["index"], [piece.reshape(x.shape) for piece, x in zip(pieces, results)]


def read_out(out, kind: str, offset: int, count: int, reverse: bool) -> torch.Tensor:
    """One pass's read-out from its output ``out`` (L, V) logits or (L, D) hidden states, given
    the read-out span in the pass's own orientation; float32, in forward-strand coordinates."""
    x = out[offset : offset + count].float()  # (count, V) or (count, D)
    if kind == "logp":
        x = x[:, :4].log_softmax(-1)
        if reverse:
            x = x.flip(0).flip(1)  # back to forward positions; A,C,G,T <- T,G,C,A
    elif kind == "mean":
        x = x.mean(0)
    elif reverse:
        x = x.flip(0)
    return x


def run_long_pass(model, p: Pass, genome, max_window: int, device, dtype=None,
                  progress: bool = False) -> np.ndarray:
    """One pass through the layer-by-layer schedule of :mod:`genossm.model.longseq`, in
    ``max_window``-base chunks: the read-out ``run_batch`` would give, up to float rounding.
    ``progress``: a bar on stderr counting the model's blocks."""
    from genossm.model.longseq import long_forward

    ids = torch.from_numpy(p.tokens(genome))
    kind = p.read[0]
    schedule = dict(chunk_size=max_window, device=device, dtype=dtype or torch.float32, progress=progress)
    if kind == "logp":
        out = long_forward(model, ids, output="logits", **schedule)  # (L, V)
    else:  # hidden_states[layer] (negative: from the end): after ``layer`` blocks, the last after the final norm
        layer = p.read[3] % (model.config.n_layer + 1)
        out = long_forward(model, ids, output="hidden", layer=None if layer == model.config.n_layer else layer,
                           **schedule)  # (L, D)
    offset, count = p.own_span()
    return read_out(out, kind, offset, count, p.strand < 0).numpy()


def load_model(model):
    """A GenoSSM instance as is, or one loaded from a path (save_pretrained dir or Lightning .ckpt)."""
    if isinstance(model, torch.nn.Module):
        return model
    from genossm.model import GenoSSM

    return GenoSSM.from_pretrained(model)


def is_global_zero() -> bool:
    """False only in a non-zero rank of a torch.distributed job (where outputs must not be written)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return not distributed or torch.distributed.get_rank() == 0


def resolve_device(device=None) -> torch.device:
    """'auto'/None: CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise GenossmError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenossmError(f"device {str(device)!r} asked for, but no CUDA device is available")
    return device


def autocast_dtype(precision: str, device: torch.device):
    """Autocast dtype for ``precision`` 'bf16', 'fp32' (None: no autocast) or 'auto' (bf16 on
    CUDA, the speed path the model trains in; fp32 on CPU)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("bf16", "fp32"):
        raise GenossmError(f"unknown precision {precision!r}: use auto, bf16 or fp32")
    return torch.bfloat16 if precision == "bf16" else None


def run_passes(model, genome, passes, *, batch_size=None, device=None, devices: int = 1,
               precision: str = "auto", progress: bool = True, desc: str = "passes",
               max_window: int | None = MAX_WINDOW):
    """Read-outs of every pass (list aligned with ``passes``), computed batch by batch.

    ``devices > 1`` runs Lightning predict with DDP over the first ``devices`` devices of
    ``device``'s type; every rank returns the full, ordered list. ``precision``: see
    :func:`autocast_dtype`. Passes longer than ``max_window`` (None: no limit) run one at a time
    through :func:`run_long_pass` on ``device`` (on every rank with ``devices > 1``).
    """
    from tqdm import tqdm

    device = resolve_device(device)
    dtype = autocast_dtype(precision, device)
    results = [None] * len(passes)
    long = [i for i, p in enumerate(passes) if max_window is not None and p.length > max_window]
    short = sorted(set(range(len(passes))) - set(long))
    bar = dict(file=sys.stderr, disable=not progress, dynamic_ncols=True)
    if long:
        model = model.to(device).eval()
    for i in tqdm(long, desc=f"{desc} (long windows)", unit="window", **bar):
        results[i] = run_long_pass(model, passes[i], genome, max_window, device, dtype, progress)
    if not short:
        return results
    if batch_size is None:
        batch_size = max(1, TOKENS_PER_BATCH.get(device.type, 1 << 16) // max(passes[i].length for i in short))
    batches = plan_batches(passes, batch_size, short)
    dataset = PassBatches(passes, genome, batches)
    if devices > 1:
        from genossm.score.distributed import predict_distributed

        for index, out in predict_distributed(model, dataset, device.type, devices, dtype, progress, desc):
            results[index] = out
        return results
    model = model.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, pin_memory=device.type == "cuda")
    for batch in tqdm(loader, desc=desc, unit="batch", **bar):
        indices, outs = run_batch(model, batch, device, dtype)
        for index, out in zip(indices, outs):
            results[index] = out
    return results
