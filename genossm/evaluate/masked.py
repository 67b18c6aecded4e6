"""Masked-base scoring of a model on held-out windows: every scored base is masked exactly once.

Each window (a ``genossm.train.windows.ValWindow``: fetch, pad to the window length, score
``[score_start, score_end)``) runs ``stride`` times: pass r replaces the scored A/C/G/T bases whose
window offset is r modulo ``stride`` by [MASK] and reads the model's distribution over A, C, G, T
there. Masked bases are ``stride`` apart, so each one has its ``stride - 1`` nearest neighbours on
both sides visible (what the Markov baseline's posterior uses, for orders below ``stride``).
"""

import math

import numpy as np
import torch
from tqdm import tqdm

from genossm.evaluate.metrics import MaskedScore
from genossm.tokenize import MASK, N, PAD


def masked_passes(store, names, windows, window: int, stride: int):
    """Yield (ids (window,) uint8 unmasked, positions to mask and score (n,) int64) per pass."""
    for w in windows:
        ids = np.full(window, PAD, dtype=np.uint8)
        ids[: w.length] = store.window(names[w.contig], w.start, w.start + w.length)[0]
        offsets = np.arange(w.score_start, w.score_end)
        offsets = offsets[ids[offsets] < N]  # A/C/G/T targets only
        for phase in range(stride):
            positions = offsets[offsets % stride == phase]
            if len(positions):
                yield ids, positions


@torch.inference_mode()
def score_windows(model, store, names, windows, window: int, stride: int, *, device, dtype=None,
                  tokens_per_batch: int = 1 << 16, progress: bool = True) -> MaskedScore:
    """Masked-base score of ``model`` over every scored base of ``windows`` (see the module docstring)."""
    score = MaskedScore()
    per_batch = max(1, tokens_per_batch // window)
    batch = []
    passes = masked_passes(store, names, windows, window, stride)
    for item in tqdm(passes, total=len(windows) * stride, desc=f"score window {window:,}", unit="pass",
                     disable=not progress, leave=False):
        batch.append(item)
        if len(batch) == per_batch:
            _run(model, batch, score, device, dtype)
            batch = []
    if batch:
        _run(model, batch, score, device, dtype)
    return score


def _run(model, batch, score: MaskedScore, device, dtype):
    inputs = np.stack([ids for ids, _ in batch])  # (B, W)
    rows = np.concatenate([np.full(len(p), b) for b, (_, p) in enumerate(batch)])
    cols = np.concatenate([p for _, p in batch])
    targets = inputs[rows, cols].astype(np.int64)
    inputs[rows, cols] = MASK
    x = torch.from_numpy(inputs).to(device).long()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(x)  # (B, W, V)
    picked = logits[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device), :4].float()
    score.add((picked.log_softmax(-1) / math.log(2)).cpu().numpy(), targets)
