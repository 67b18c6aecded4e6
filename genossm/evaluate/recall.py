"""Long-range recall: does the model carry information across up to millions of bases?

For each seed: train a small GenoSSM on recall sequences (``genossm.evaluate.recall_task``) no
longer than ``train_length`` (lengths drawn log-uniformly from ``min_train_length`` up to the
curriculum's current longest length, pair and query anywhere, forward and mirror cases mixed in
every batch), then, without retraining, predict the masked value of fresh sequences of each
evaluation length with the pair at the far end. Baselines in the same run: chance (1/4 per base,
4^-v per whole value) and the same model given only the query's neighbourhood (``neighbourhood``
bases each side of the masked value, so the key is visible but the pair is not): that one must
sit at chance, or the task leaks information locally.

Metrics per (seed, direction, length): per-base accuracy, exact match of the whole value, and
cross-entropy in bits per base (over A/C/G/T). ``run_recall`` returns them JSON-ready. With
``dt_filter`` quantiles the same sequences are scored again under the inference-time dt filter
(``genossm.model.dt_filter``) at each quantile, calibrated on the seed's random background.
"""

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from genossm.errors import GenossmError
from genossm.evaluate.horizon import horizon_summary, memory_horizons
from genossm.evaluate.recall_task import (
    MAX_KEY_LENGTH,
    make_batch,
    make_key,
    min_length,
    neighbourhood_crop,
    neighbourhood_fits,
)
from genossm.model import GenoSSM, GenoSSMConfig
from genossm.model.dt_filter import calibrate_dt_filter, calibration_positions, clear_dt_filter
from genossm.score.passes import autocast_dtype, resolve_device
from genossm.tokenize import decode
from genossm.train.module import warmup_cosine

log = logging.getLogger("genossm.evaluate")

DIRECTIONS = ("forward", "mirror")
TOKENS_PER_BATCH = {"cuda": 1 << 22, "cpu": 1 << 15}  # evaluation tokens per forward pass
_TRAIN, _EVAL, _KEY, _BACKGROUND = 0, 1, 2, 3  # random streams of a seed
FILTERED_METRICS = ("accuracy", "exact_match", "bits_per_base")  # recorded again per dt filter quantile
HORIZON_SEQUENCES = 4  # random background sequences of train_length bases for the memory horizons


@dataclass
class RecallConfig:
    key_length: int = 16  # >= 16: a shorter key recurs by chance in 4M random bases
    value_length: int = 8
    train_length: int = 8192  # longest training sequence
    min_train_length: int = 64
    # Length curriculum: training starts on sequences of min_train_length bases and the longest
    # length doubles (up to train_length) each time the mean loss of the last advance_window steps
    # falls below advance_loss. Recall over a few dozen bases is learnt first; straight on
    # 256-8,192 bases the loss sat at chance for 2,500 steps (H200, 2026-12-02).
    curriculum: bool = True
    advance_loss: float = 0.2  # nats
    advance_window: int = 100
    lengths: tuple = (8192, 65536, 1_048_576, 4_194_304)  # evaluation lengths
    directions: tuple = DIRECTIONS
    seeds: tuple = (0, 1, 2)
    # induction-style tasks sit on a plateau at chance for a while before they click; on the
    # H200 a 12,000-step schedule left it at step 4,000 and was at 0.002 nats by 10,800 (2026-12-02)
    steps: int = 15_000
    # Training ends early once the curriculum has reached train_length and the last
    # advance_window steps average below stop_loss nats (0: never), or after max_train_seconds
    # (None: no limit; the record then says at which step it stopped)
    stop_loss: float = 0.005
    # near-misses of the key planted per training sequence (recall_task: a partial key detector is
    # enough within 8 kb, not over 1M); evaluation sequences never have them
    distractors: int = 0
    max_train_seconds: float | None = None
    batch_size: int = 32
    # 2 layers at 3e-3 left the plateau on 64-base sequences after ~1,000 steps (CPU pilot); 4
    # layers at 1e-3 after ~2,300 (H200), 2026-12-02
    lr: float = 3e-3
    warmup_steps: int = 200
    d_model: int = 64
    n_layer: int = 2
    dt_min: float = 0.001  # the model's smallest initial dt: initial memory horizons up to 1/dt_min bases
    examples: int = 64  # evaluation sequences per (seed, direction, length)
    # also evaluate, on the same sequences, with the inference-time dt filter of
    # genossm.model.dt_filter at each of these quantiles (calibrated on random background of
    # train_length bases; channels whose horizon reaches train_length); (): plain model only
    dt_filter: tuple = ()
    neighbourhood: int = 1024  # bases each side of the masked value in the truncated baseline
    tokens_per_batch: int | None = None  # evaluation batch size in tokens [4M on GPU, 32k on CPU]

    @classmethod
    def smoke(cls) -> "RecallConfig":
        """Tiny sizes for a CPU run of the whole pipeline in well under a minute (not a measurement)."""
        return cls(train_length=512, min_train_length=128, lengths=(512, 2048, 8192), seeds=(0, 1), steps=20,
                   batch_size=8, lr=3e-3, warmup_steps=5, d_model=16, n_layer=2, examples=4, value_length=4,
                   neighbourhood=64)

    def check(self):
        """Raise GenossmError naming the first bad setting."""
        if not 16 <= self.key_length <= MAX_KEY_LENGTH:
            _bad("key_length", f"must be in [16, {MAX_KEY_LENGTH}] (shorter keys recur by chance in 4M bases), "
                               f"got {self.key_length}")
        for name in ("value_length", "steps", "batch_size", "d_model", "n_layer", "examples", "min_train_length",
                     "advance_window"):
            if getattr(self, name) < 1:
                _bad(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.lengths or not self.seeds or not self.directions:
            _bad("lengths/seeds/directions", "need at least one of each")
        if set(self.directions) - set(DIRECTIONS) or len(set(self.directions)) < len(self.directions):
            _bad("directions", f"must be distinct values of {', '.join(DIRECTIONS)}, got {list(self.directions)}")
        if len(self.directions) == 2 and self.batch_size < 2:
            _bad("batch_size", "must be >= 2 to train both directions")
        span = self.key_length + self.value_length
        if self.min_train_length < min_length(span, "anywhere") or self.min_train_length > self.train_length:
            _bad("min_train_length", f"must be in [{min_length(span, 'anywhere')}, train_length], "
                                     f"got {self.min_train_length}")
        if self.neighbourhood < self.key_length:
            _bad("neighbourhood", f"must be >= key_length so the truncated baseline sees the query's key, "
                                  f"got {self.neighbourhood}")
        shortest = min_length(span, "far")
        for length in self.lengths:
            if length < shortest:
                _bad("lengths", f"{length} is shorter than {shortest}, the least that holds a far pair and query")
            # checked here, not after training: the baseline's crop must leave out the pair
            if not neighbourhood_fits(length, self.neighbourhood, self.key_length, self.value_length):
                _bad("neighbourhood", f"{self.neighbourhood} bases each side of the query reach the planted pair "
                                      f"in sequences of {length} bases: use a smaller neighbourhood")
        if self.advance_loss <= 0:
            _bad("advance_loss", f"must be > 0, got {self.advance_loss}")
        if self.distractors < 0:
            _bad("distractors", f"must be >= 0, got {self.distractors}")
        if self.stop_loss < 0:
            _bad("stop_loss", f"must be >= 0, got {self.stop_loss}")
        if self.max_train_seconds is not None and self.max_train_seconds <= 0:
            _bad("max_train_seconds", f"must be > 0, got {self.max_train_seconds}")
        if not all(0 < q < 1 for q in self.dt_filter):
            _bad("dt_filter", f"must be quantiles in (0, 1), got {list(self.dt_filter)}")
        if not 0 < self.dt_min <= GenoSSMConfig.dt_max:
            _bad("dt_min", f"must be in (0, {GenoSSMConfig.dt_max}], got {self.dt_min}")
        if self.lr <= 0 or self.warmup_steps < 0:
            _bad("lr/warmup_steps", "lr must be > 0 and warmup_steps >= 0")


def _bad(name, problem):
    raise GenossmError(problem, where=f"recall setting {name}")


def run_recall(config: RecallConfig, device=None, precision: str = "auto", progress: bool = True,
               save_models=None, load_models=None) -> dict:
    """Train and evaluate one model per seed; returns {"config", "training", "results", "summary"}.
    Each seed's training record holds its model's memory horizons on random background
    (``genossm.evaluate.horizon``). With ``save_models`` (a directory) each seed's trained model is
    saved there as ``seed<N>/`` (``GenoSSM.save_pretrained``); with ``load_models`` (such a
    directory) each seed's model is loaded from there instead of trained, and evaluated on the same
    sequences as when it was trained (the key, the sequences and the background follow the seed)."""
    config.check()
    device = resolve_device(device)
    dtype = autocast_dtype(precision, device)
    tokens_per_batch = config.tokens_per_batch or TOKENS_PER_BATCH.get(device.type, TOKENS_PER_BATCH["cpu"])
    training, results = [], []
    for seed in config.seeds:
        key = make_key(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY,))), config.key_length)
        if load_models is None:
            start = time.perf_counter()
            model, curve, stages, stopped = train_recall_model(config, key, seed, device, dtype, progress)
            training.append({"seed": seed, "key": decode(key), "steps": curve[-1][0], "stopped": stopped,
                             "final_train_loss": curve[-1][1], "loss_curve": curve, "length_schedule": stages,
                             "train_seconds": time.perf_counter() - start})
            log.info(f"recall seed {seed}: trained {curve[-1][0]} steps ({stopped}) in "
                     f"{training[-1]['train_seconds']:.0f} s, final loss {curve[-1][1]:.4f} nats "
                     f"(chance {math.log(4):.3f})")
        else:
            model = _load_model(Path(load_models) / f"seed{seed}", config, device)
            training.append({"seed": seed, "key": decode(key), "loaded_from": str(Path(load_models) / f"seed{seed}")})
        model.eval()
        if save_models is not None:
            model.save_pretrained(Path(save_models) / f"seed{seed}")
        # on the host: the dt filter's calibration at high quantiles takes millions of positions
        background = torch.from_numpy(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_BACKGROUND,)))
                                      .integers(0, 4, (background_rows(config), config.train_length), np.uint8))
        horizon_ids = background[:HORIZON_SEQUENCES].to(device)
        horizons = horizon_summary(memory_horizons(model, horizon_ids, dtype), config.lengths)
        training[-1]["memory_horizons"] = horizons
        log.info(f"recall seed {seed}: longest memory horizon, bases: "
                 + ", ".join(f"layer {h['layer']} {h['direction']} {h['longest']:,.0f}" for h in horizons))
        rows = [{"seed": seed, "direction": direction, "length": length}
                for length in config.lengths for direction in config.directions]
        for row in rows:
            row.update(_evaluate_row(model, config, key, seed, row, device, dtype, tokens_per_batch))
            log.info(f"recall seed {seed} {row['direction']} {row['length']:,}: accuracy {row['accuracy']:.4f}, "
                     f"truncated {row['truncated_accuracy']:.4f}")
        training[-1]["dt_filter"] = []
        for quantile in config.dt_filter:  # the same sequences again, through the dt filter
            channels = calibrate_dt_filter(model, background, quantile, config.train_length, dtype)
            training[-1]["dt_filter"].append({
                "quantile": quantile, "min_horizon": config.train_length, "channels": channels,
                "memory_horizons": horizon_summary(memory_horizons(model, horizon_ids, dtype), config.lengths)})
            for row in rows:
                metrics = _evaluate_row(model, config, key, seed, row, device, dtype, tokens_per_batch)
                row.update({filtered_key(quantile, k): metrics[k] for k in FILTERED_METRICS})
                log.info(f"recall seed {seed} {row['direction']} {row['length']:,}, dt filter {quantile:g}: "
                         f"accuracy {metrics['accuracy']:.4f}")
            clear_dt_filter(model)
        results += rows
    return {"config": asdict(replace(config, tokens_per_batch=tokens_per_batch)),
            "precision": "bf16" if dtype is not None else "fp32",
            "training": training, "results": results, "summary": summarize(results, config.value_length)}


def _load_model(path: Path, config: RecallConfig, device) -> GenoSSM:
    """A model saved by ``--save-models``, which must have been trained at ``config.train_length``
    (the memory horizons and the dt filter are measured over that length)."""
    if not (path / "config.json").is_file():
        raise GenossmError("no saved recall model here (expected seed<N>/config.json from --save-models)",
                           path=path)
    model = GenoSSM.from_pretrained(path).to(device)
    if model.config.context_length != config.train_length:
        raise GenossmError(f"the model was trained on sequences up to {model.config.context_length:,} bases, "
                           f"not {config.train_length:,}: pass --train-length {model.config.context_length}",
                           path=path)
    return model


class LengthCurriculum:
    """The longest training length: ``start`` at first, doubled (up to ``end``) by each ``update``
    with a mean loss below ``advance_loss``; fixed at ``end`` when ``enabled`` is false."""

    def __init__(self, start: int, end: int, advance_loss: float, enabled: bool = True):
        self.longest = start if enabled else end
        self.end, self.advance_loss = end, advance_loss

    def update(self, mean_loss: float) -> bool:
        """Advance after a window of steps with ``mean_loss``; returns whether the length grew."""
        if mean_loss >= self.advance_loss or self.longest >= self.end:
            return False
        self.longest = min(2 * self.longest, self.end)
        return True


def train_recall_model(config: RecallConfig, key, seed: int, device, dtype, progress: bool = True):
    """A fresh GenoSSM trained on recall sequences; returns (model, loss curve, length schedule,
    why training stopped): the curve is [last step, mean loss in nats] over each tenth of the run
    (and its last steps), the schedule [first step, longest training length] of each curriculum
    stage; training stops after ``config.steps`` ("steps"), at ``config.stop_loss`` ("converged")
    or after ``config.max_train_seconds`` ("time limit")."""
    torch.manual_seed(seed)
    model = GenoSSM(GenoSSMConfig(d_model=config.d_model, n_layer=config.n_layer, dt_min=config.dt_min,
                                  context_length=config.train_length)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup_steps, config.steps, 0.1))
    if len(config.directions) == 2:
        mirrored = config.batch_size // 2  # rows of each batch in the mirror case
    else:
        mirrored = config.batch_size if config.directions[0] == "mirror" else 0
    curriculum = LengthCurriculum(config.min_train_length, config.train_length, config.advance_loss,
                                  config.curriculum)
    stages = [[0, curriculum.longest]]
    losses, curve, every = [], [], max(1, config.steps // 10)  # losses: one per step, on the device
    start, stopped = time.perf_counter(), "steps"
    for step in tqdm(range(config.steps), desc=f"recall train seed {seed}", disable=not progress, leave=False):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TRAIN, step)))
        low, high = math.log(config.min_train_length), math.log(curriculum.longest)
        length = int(round(math.exp(rng.uniform(low, high))))
        parts = [make_batch(rng, key, config.value_length, length, n, mirror, "anywhere", config.distractors)
                 for n, mirror in ((config.batch_size - mirrored, False), (mirrored, True)) if n]
        ids = np.concatenate([p.ids for p in parts])
        targets = torch.from_numpy(np.concatenate([p.targets for p in parts])).to(device).long()  # (B, v)
        query = np.concatenate([p.query for p in parts])
        log2p = masked_log2_probs(model, ids, query, config.value_length, device, dtype)  # (B, v, 4)
        loss = F.nll_loss(log2p.reshape(-1, 4) * math.log(2), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach())  # no host sync per step
        if (step + 1) % config.advance_window == 0:
            recent = torch.stack(losses[-config.advance_window:]).mean().item()
            if curriculum.longest >= config.train_length and recent < config.stop_loss:
                stopped = "converged"
            elif curriculum.update(recent):
                stages.append([step + 1, curriculum.longest])
                log.info(f"recall seed {seed} step {step + 1}: training lengths now up to {curriculum.longest:,}")
        elapsed = time.perf_counter() - start
        if config.max_train_seconds is not None and elapsed > config.max_train_seconds:
            stopped = "time limit"
        if (step + 1) % every == 0 or step + 1 == config.steps or stopped != "steps":
            since = curve[-1][0] if curve else 0
            curve.append([step + 1, torch.stack(losses[since:]).mean().item()])
            log.info(f"recall seed {seed} step {step + 1}: loss {curve[-1][1]:.4f} nats "
                     f"(lengths up to {curriculum.longest:,}; {elapsed:.0f} s)")
        if stopped != "steps":
            break
    return model, curve, stages, stopped


def masked_log2_probs(model, ids: np.ndarray, starts: np.ndarray, count: int, device, dtype) -> torch.Tensor:
    """(B, count, 4) float32 log2 P(A, C, G, T) at positions starts[b] .. starts[b] + count - 1 of ids (B, L)."""
    x = torch.from_numpy(np.ascontiguousarray(ids)).to(device).long()  # (B, L)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(x)  # (B, L, V)
    index = torch.from_numpy(starts[:, None] + np.arange(count)).to(device)  # (B, count)
    picked = logits[torch.arange(len(starts), device=device)[:, None], index, :4].float()
    return picked.log_softmax(-1) / math.log(2)


def background_rows(config: RecallConfig) -> int:
    """Random background sequences (train_length bases each) for the memory horizons and for
    calibrating the dt filter at the highest of ``config.dt_filter``."""
    needed = max((calibration_positions(q) for q in config.dt_filter), default=0)
    return max(HORIZON_SEQUENCES, math.ceil(needed / config.train_length))


def filtered_key(quantile: float, metric: str) -> str:
    """The result key of ``metric`` under the dt filter at ``quantile``: dt_filter_0.9_accuracy."""
    return f"dt_filter_{quantile:g}_{metric}"


def _evaluate_row(model, config, key, seed, row, device, dtype, tokens_per_batch) -> dict:
    """evaluate_recall on the sequences of the seed's evaluation stream for the row's length and
    direction: the same ones on every call and whatever other lengths are evaluated."""
    rng = np.random.default_rng(np.random.SeedSequence(
        seed, spawn_key=(_EVAL, row["length"], DIRECTIONS.index(row["direction"]))))
    return evaluate_recall(model, config, key, rng, row["length"], row["direction"] == "mirror", device, dtype,
                           tokens_per_batch)


@torch.inference_mode()
def evaluate_recall(model, config: RecallConfig, key, rng, length: int, mirror: bool, device, dtype,
                    tokens_per_batch: int) -> dict:
    """Accuracy, exact match and bits per base on ``config.examples`` far-placed sequences, and the
    same for the truncated-context baseline on their query neighbourhoods."""
    full, truncated = _Tally(), _Tally()
    per_batch = max(1, tokens_per_batch // length)
    for first in range(0, config.examples, per_batch):
        batch = make_batch(rng, key, config.value_length, length, min(per_batch, config.examples - first),
                           mirror, "far")
        full.add(masked_log2_probs(model, batch.ids, batch.query, config.value_length, device, dtype), batch.targets)
        crop, starts = neighbourhood_crop(batch, config.neighbourhood, config.key_length)
        truncated.add(masked_log2_probs(model, crop, starts, config.value_length, device, dtype), batch.targets)
    return {"examples": config.examples, **full.metrics(), **truncated.metrics("truncated_")}


class _Tally:
    def __init__(self):
        self.correct = self.exact = self.bits = self.bases = self.values = 0

    def add(self, log2p: torch.Tensor, targets: np.ndarray):
        target = torch.from_numpy(targets).to(log2p.device).long()  # (B, v)
        hit = log2p.argmax(-1) == target  # (B, v)
        self.correct += int(hit.sum())
        self.exact += int(hit.all(-1).sum())
        self.bits -= float(log2p.gather(-1, target[..., None]).sum())
        self.bases += target.numel()
        self.values += target.shape[0]

    def metrics(self, prefix: str = "") -> dict:
        return {f"{prefix}accuracy": self.correct / self.bases, f"{prefix}exact_match": self.exact / self.values,
                f"{prefix}bits_per_base": self.bits / self.bases}


def summarize(results: list, value_length: int) -> list:
    """Per (direction, length): mean, standard deviation and minimum over seeds, and chance."""
    out = []
    keys = sorted({(r["direction"], r["length"]) for r in results},
                  key=lambda k: (DIRECTIONS.index(k[0]), k[1]))
    for direction, length in keys:
        rows = [r for r in results if r["direction"] == direction and r["length"] == length]
        entry = {"direction": direction, "length": length, "seeds": len(rows)}
        metrics = ["accuracy", "exact_match", "bits_per_base", "truncated_accuracy", "truncated_exact_match"]
        metrics += [k for k in rows[0] if k.startswith("dt_filter_")]
        for metric in metrics:
            values = np.array([r[metric] for r in rows])
            entry[metric] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                             "min": float(values.min())}
        entry["chance_accuracy"] = 0.25
        entry["chance_exact_match"] = 0.25**value_length
        out.append(entry)
    return out
