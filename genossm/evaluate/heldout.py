"""Held-out masked-base prediction on a real genome: the model against honest baselines, and the
context ablation.

The genome's held-out regions (by default the last 10% of every contig) are never trained on. On
the training part, under one budget (``steps`` optimizer steps of ``batch_bases`` bases each, so
every window length sees the same bases), one GenoSSM is trained per window length with
``genossm.train``; each is then scored on the held-out bases with ``genossm.evaluate.masked``
(every held-out base masked once, the window placed as in training's validation: a held-out
stretch shorter than the window is centred in it, so training bases on both sides are context;
only held-out bases count). Baselines in the same run, on the same bases: base composition (GC
content) and the best k-mer Markov model (``genossm.evaluate.markov``; order and smoothing chosen
on a validation slice, the last ``markov_val_fraction`` of each training stretch, then refitted on
the whole training part).

Coordinates are 0-based half-open.
"""

import contextlib
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from genossm.errors import GenossmError
from genossm.evaluate.markov import KmerCounts, MarkovModel, composition_score, select_markov
from genossm.evaluate.masked import score_windows
from genossm.model import GenoSSM
from genossm.score.passes import autocast_dtype, resolve_device
from genossm.store import TokenStore, build_store
from genossm.tokenize import PAD
from genossm.train import config_from_dict, train
from genossm.train.windows import HELDOUT_SPLITS, Layout, TrainingStretches, validation_windows

log = logging.getLogger("genossm.evaluate")

TOKENS_PER_BATCH = {"cuda": 1 << 21, "cpu": 1 << 15}  # evaluation tokens per forward pass
EVAL_BLOCKS = 8  # with eval_bases: that many evenly spaced blocks of held-out bases


@dataclass
class HeldoutConfig:
    windows: tuple = (1024, 16_384, 131_072, 1_048_576)  # one training run and score per window length
    steps: int = 70  # optimizer steps per window length: ~10 min of the reference model on one H100
    batch_bases: int = 1 << 20  # bases per optimizer step (batch size = batch_bases / window)
    d_model: int = 256
    n_layer: int = 16
    checkpointing: bool = True  # activation checkpointing (1M-base windows need it on one GPU)
    lr: float = 2e-3
    warmup_steps: int = 10
    seed: int = 0
    stride: int = 16  # masked bases per window pass are this far apart
    eval_bases: int | None = None  # score only this many held-out bases (evenly spaced blocks); None: all
    markov_max_order: int = 12
    markov_betas: tuple = (2.0, 8.0, 32.0, 128.0, 512.0, 2048.0)
    markov_val_fraction: float = 0.1
    markov_val_positions: int = 200_000  # validation bases scored per (order, beta) candidate
    num_workers: int = 4
    tokens_per_batch: int | None = None  # evaluation batch size in tokens [2M on GPU, 32k on CPU]

    @classmethod
    def smoke(cls) -> "HeldoutConfig":
        """Tiny sizes for a CPU run of the whole pipeline in well under a minute (not a measurement)."""
        return cls(windows=(128, 512), steps=20, batch_bases=2048, d_model=16, n_layer=2, checkpointing=False,
                   lr=5e-3, warmup_steps=5, eval_bases=2048, markov_max_order=8, markov_betas=(2.0, 32.0),
                   markov_val_positions=20_000, num_workers=0)

    def check(self):
        """Raise GenossmError naming the first bad setting."""
        for name in ("steps", "batch_bases", "d_model", "n_layer", "markov_val_positions"):
            if getattr(self, name) < 1:
                _bad(name, f"must be >= 1, got {getattr(self, name)}")
        for window in self.windows:
            if window < 1 or self.batch_bases % window:
                _bad("windows", f"{window} must be >= 1 and divide batch_bases ({self.batch_bases}) so every "
                                "window length trains on the same bases")
        if len(set(self.windows)) < len(self.windows):
            _bad("windows", f"repeated window length in {list(self.windows)}")
        if not 0 <= self.markov_max_order <= 13:
            _bad("markov_max_order", f"must be in [0, 13] (tables hold 4^(order+1) entries), "
                                     f"got {self.markov_max_order}")
        if self.stride <= self.markov_max_order:
            _bad("stride", f"must exceed markov_max_order ({self.markov_max_order}) so masked bases never sit in "
                           f"each other's Markov context, got {self.stride}")
        if not self.markov_betas or min(self.markov_betas) <= 0:
            _bad("markov_betas", f"need at least one value, all > 0, got {list(self.markov_betas)}")
        if not 0 < self.markov_val_fraction < 1:
            _bad("markov_val_fraction", f"must be in (0, 1), got {self.markov_val_fraction}")
        if self.eval_bases is not None and self.eval_bases < 1:
            _bad("eval_bases", f"must be >= 1 (or unset for all), got {self.eval_bases}")


def _bad(name, problem):
    raise GenossmError(problem, where=f"heldout setting {name}")


def run_heldout(inputs, config: HeldoutConfig, *, work_dir=None, split: str = "test", holdout_fraction: float = 0.1,
                topology: str = "auto", device=None, precision: str = "auto", progress: bool = True) -> dict:
    """Evaluate on ``inputs``: genome files (FASTA/GenBank; the last ``holdout_fraction`` of each
    contig is held out as ``split``) or one token store directory (its ``split`` regions are held out).

    ``work_dir`` keeps the built store and the training runs (one per window: runs/window_W);
    default: a temporary directory, removed at the end. Returns a JSON-ready dict.
    """
    config.check()
    if split not in HELDOUT_SPLITS:
        raise GenossmError(f"split must be one of {', '.join(HELDOUT_SPLITS)}, got {split!r}")
    device = resolve_device(device)
    dtype = autocast_dtype(precision, device)
    tokens_per_batch = config.tokens_per_batch or TOKENS_PER_BATCH.get(device.type, TOKENS_PER_BATCH["cpu"])
    with _work_directory(work_dir) as work:
        store = _open_or_build(inputs, work / "genome.store", split, holdout_fraction, topology, progress)
        layout = Layout.from_store(store)
        heldout = layout.heldout[split]
        if not heldout:
            raise GenossmError(f"the store has no held-out regions in split {split!r}", path=store.path)
        regions = evenly_spaced_blocks(heldout, config.eval_bases)
        pieces = region_pieces(store, regions, config.markov_max_order)
        scored = sum(len(positions) for _, positions in pieces)
        if scored == 0:
            raise GenossmError("the held-out regions hold no A/C/G/T base to score", path=store.path)
        summary = {"store": str(store.path), "contigs": len(layout.names), "bases": int(layout.lengths.sum()),
                   "split": split, "heldout_regions": len(heldout),
                   "heldout_bases": sum(e - s for _, s, e in heldout), "scored_regions": len(regions),
                   "scored_bases": scored}
        log.info(f"{summary['heldout_bases']:,} held-out bases in {len(heldout)} region(s); scoring {scored:,}")

        start = time.perf_counter()
        baselines = markov_baselines(store, layout, pieces, config)
        baselines["seconds"] = time.perf_counter() - start
        log.info(f"baselines: GC content {baselines['gc_content']['bits_per_base']:.4f} bits/base, Markov order "
                 f"{baselines['markov']['order']} {baselines['markov']['bits_per_base']:.4f} bits/base")

        eval_layout = replace(layout, heldout={"eval": regions})
        models = []
        for window in config.windows:
            run_dir = work / "runs" / f"window_{window}"
            models.append(train_and_score(store, layout, eval_layout, window, config, run_dir, device, precision,
                                          dtype, tokens_per_batch, progress))
            if models[-1]["scored_bases"] != scored:
                raise RuntimeError(f"window {window}: scored {models[-1]['scored_bases']} bases, baselines {scored}")
            log.info(f"window {window:,}: {models[-1]['bits_per_base']:.4f} bits/base, "
                     f"accuracy {models[-1]['accuracy']:.4f}")
    return {"config": asdict(replace(config, tokens_per_batch=tokens_per_batch)),
            "precision": "bf16" if dtype is not None else "fp32", "genome": summary, "baselines": baselines,
            "models": models}


def evenly_spaced_blocks(regions, total=None) -> list:
    """``regions`` (name, start, end) as they are, or, when ``total`` is smaller than their size,
    EVAL_BLOCKS blocks of about total / EVAL_BLOCKS bases evenly spaced along them laid end to end."""
    sizes = np.array([end - start for _, start, end in regions], dtype=np.int64)
    if total is None or total >= sizes.sum():
        return [tuple(r) for r in regions]
    n_blocks = min(EVAL_BLOCKS, total)
    block = total // n_blocks
    ends = np.cumsum(sizes)
    out = []
    for first in (np.arange(n_blocks) * (sizes.sum() // n_blocks)).tolist():
        k = int(np.searchsorted(ends, first, side="right"))
        name, start, end = regions[k]
        offset = start + first - int(ends[k] - sizes[k])
        out.append((name, offset, min(end, offset + block)))
    return out


def region_pieces(store, regions, flank: int) -> list:
    """(ids, positions) per region for the baselines: the region with ``flank`` bases each side
    (PAD past linear ends, wrapped on circular contigs) and the positions of its A/C/G/T bases."""
    pieces = []
    for name, start, end in regions:
        ids = store.window(name, start - flank, end + flank)[0]
        positions = flank + np.flatnonzero(ids[flank : len(ids) - flank] < 4)
        pieces.append((ids, positions))
    return pieces


def markov_baselines(store, layout, pieces, config: HeldoutConfig) -> dict:
    """GC-content and best-Markov scores on ``pieces``; the Markov order and beta are chosen on the
    last ``markov_val_fraction`` of each training stretch, counts from the rest."""
    k = config.markov_max_order
    fit, val = KmerCounts(k), KmerCounts(k)
    val_pieces = []
    stretches = TrainingStretches(layout)
    for contig, start, end in zip(stretches.contig.tolist(), stretches.start.tolist(), stretches.end.tolist()):
        name = layout.names[contig]
        split_at = end - int((end - start) * config.markov_val_fraction)
        fit.add(store.window(name, start, split_at)[0])
        if split_at == end:
            continue
        val.add(store.window(name, split_at, end)[0])
        # left flank from the fit part; PAD on the right: no held-out base is seen, even as context
        left = max(start, split_at - k)
        ids = np.concatenate([store.window(name, left, end)[0], np.full(k, PAD, dtype=np.uint8)])
        val_pieces.append((ids, split_at - left + np.flatnonzero(ids[split_at - left : len(ids) - k] < 4)))
    if fit.bases == 0:
        raise GenossmError("no A/C/G/T bases in the training part", path=store.path)
    val_pieces = _subsample(val_pieces, config.markov_val_positions, config.seed)
    if sum(len(p) for _, p in val_pieces):
        order, beta, grid = select_markov(fit, val_pieces, config.markov_betas)
    else:  # no validation slice (tiny training part): the smallest model
        order, beta, grid = 0, float(config.markov_betas[0]), []
    fit.merge(val)
    markov = MarkovModel.fit(fit, order, beta).score(pieces)
    gc = composition_score(fit, pieces)
    base_counts = fit.counts[0]
    return {
        "gc_content": {**gc.to_dict(), "gc_fraction": float(base_counts[1:3].sum() / base_counts.sum())},
        "markov": {**markov.to_dict(), "order": order, "beta": beta, "training_bases_both_strands": fit.bases,
                   "validation_bases": sum(len(p) for _, p in val_pieces), "selection": grid},
    }


def _subsample(pieces, total: int, seed: int) -> list:
    """At most ``total`` positions over all pieces, drawn uniformly without replacement (seeded)."""
    sizes = [len(p) for _, p in pieces]
    if sum(sizes) <= total:
        return pieces
    keep = np.zeros(sum(sizes), dtype=bool)
    keep[np.random.default_rng(seed).choice(sum(sizes), total, replace=False)] = True
    out, first = [], 0
    for (ids, positions), size in zip(pieces, sizes):
        out.append((ids, positions[keep[first : first + size]]))
        first += size
    return out


def train_and_score(store, layout, eval_layout, window: int, config: HeldoutConfig, run_dir: Path, device,
                    precision: str, dtype, tokens_per_batch: int, progress: bool) -> dict:
    """Train one model with ``window``-base windows (genossm.train) and score it on the held-out bases."""
    batch_size = config.batch_bases // window
    train_config = config_from_dict({
        "seed": config.seed,
        "model": {"d_model": config.d_model, "n_layer": config.n_layer, "checkpointing": config.checkpointing},
        "data": {"store": str(store.path), "window": window, "batch_size": batch_size,
                 "num_workers": config.num_workers, "max_val_windows": 1},
        "optim": {"lr": config.lr, "warmup_steps": min(config.warmup_steps, config.steps)},
        "trainer": {"max_steps": config.steps, "val_every_n_steps": config.steps,
                    "checkpoint_every_n_steps": config.steps, "log_every_n_steps": min(10, config.steps),
                    "accelerator": "gpu" if device.type == "cuda" else "cpu", "devices": 1,
                    "precision": {"auto": "auto", "bf16": "bf16-mixed", "fp32": "32-true"}[precision],
                    "progress_bar": progress},
    }, source="genossm evaluate heldout")
    start = time.perf_counter()
    run = train(train_config, run_dir=run_dir)
    trained = time.perf_counter() - start
    model = GenoSSM.from_pretrained(run / "model").to(device)
    start = time.perf_counter()
    windows = validation_windows(eval_layout, window, "eval")
    score = score_windows(model, store, layout.names, windows, window, config.stride, device=device, dtype=dtype,
                          tokens_per_batch=tokens_per_batch, progress=progress)
    return {"window": window, "batch_size": batch_size, "steps": config.steps,
            "training_bases": config.steps * config.batch_bases, "parameters": model.num_parameters(),
            **score.to_dict(), "eval_windows": len(windows), "train_seconds": trained,
            "eval_seconds": time.perf_counter() - start, "run_dir": str(run)}


@contextlib.contextmanager
def _work_directory(work_dir):
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="genossm-evaluate-") as tmp:
            yield Path(tmp)
        return
    work = Path(work_dir)
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise GenossmError("work directory exists and is not empty (choose a new one)", path=work)
    work.mkdir(parents=True, exist_ok=True)
    yield work


def _open_or_build(inputs, store_path: Path, split, holdout_fraction, topology, progress) -> TokenStore:
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise GenossmError("no input: give genome files (FASTA/GenBank) or one token store directory")
    if len(inputs) == 1 and inputs[0].is_dir():
        store = TokenStore.open(inputs[0])
        if store.is_reads:
            raise GenossmError("a read store has no genome to hold out: give a genome store or FASTA", path=inputs[0])
        return store
    return build_store(inputs, store_path, topology=topology, holdout_fraction=holdout_fraction,
                       holdout_split=split, progress=progress)
