"""Training and validation batches from a token store.

Every sample is a dict of CPU tensors, collated to (B, L)::

    input_ids  uint8 (L,)  token ids (genossm.tokenize), PAD past the fetched bases
    softmask   bool  (L,)  soft-masked (lowercase) bases
    loss_mask  bool  (L,)  positions that may be scored (training: all; validation: held-out bases)
    seed       int         seeds the masking of this sample (MaskedLMModule)

Exact resume: the window, strand and masking seed of sample ``i`` of optimizer step ``s`` on rank
``r`` come from a generator seeded with ``(seed, s, r, i)`` alone (``i`` counts across the
gradient-accumulation micro-batches of the step), never from a sampler's hidden state. The batch
sampler covers the whole run, micro-batch ``0 .. max_steps * accumulate_grad_batches``, and starts
at the restored step, so a resumed run sees exactly the windows an uninterrupted run would have.
"""

import signal
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from genossm.errors import GenossmError
from genossm.store import TokenStore
from genossm.tokenize import N, PAD, reverse_complement
from genossm.train.callbacks import STOP_SIGNALS
from genossm.train.config import DataConfig
from genossm.train.windows import Layout, TrainingStretches, validation_windows

_TRAIN_STREAM, _VAL_STREAM = 0, 1
_MAX_DRAWS = 100  # redraws of a window over max_n_fraction before taking the least-N one seen


def sample_generator(seed: int, step: int, rank: int, index: int) -> np.random.Generator:
    """The generator behind sample ``index`` of optimizer step ``step`` on rank ``rank``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TRAIN_STREAM, step, rank, index)))


class _StoreDataset(Dataset):
    """Opens the store lazily, once per process (DataLoader workers included)."""

    def __init__(self, store_path, names, window: int):
        self.store_path, self.names, self.window = str(store_path), names, window
        self._store = None

    @property
    def store(self):
        if self._store is None:
            self._store = TokenStore.open(self.store_path)
        return self._store

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    def fetch(self, contig: int, start: int, end: int):
        """Bases ``[start, end)`` of a contig padded to the window: (ids uint8 (W,), softmask bool (W,))."""
        ids = np.full(self.window, PAD, dtype=np.uint8)
        soft = np.zeros(self.window, dtype=bool)
        got_ids, got_soft = self.store.window(self.names[contig], start, end)
        ids[: end - start] = got_ids
        soft[: end - start] = got_soft
        return ids, soft


class TrainWindows(_StoreDataset):
    """Training samples addressed by global sample number ``micro_batch * batch_size + i``."""

    def __init__(self, store_path, names, stretches: TrainingStretches, *, window: int, batch_size: int,
                 accumulate_grad_batches: int, seed: int, rank: int, max_n_fraction: float, rc_augment: bool):
        super().__init__(store_path, names, window)
        self.stretches, self.batch_size, self.accumulate = stretches, batch_size, accumulate_grad_batches
        self.seed, self.rank, self.max_n_fraction, self.rc_augment = seed, rank, max_n_fraction, rc_augment

    def __getitem__(self, number: int) -> dict:
        micro_batch, i = divmod(number, self.batch_size)
        step, k = divmod(micro_batch, self.accumulate)
        rng = sample_generator(self.seed, step, self.rank, k * self.batch_size + i)
        ids, soft = self._draw(rng)
        if self.rc_augment and rng.random() < 0.5:
            ids, soft = reverse_complement(ids), soft[::-1].copy()
        return {
            "input_ids": torch.from_numpy(ids),
            "softmask": torch.from_numpy(soft),
            "loss_mask": torch.ones(self.window, dtype=torch.bool),
            "seed": int(rng.integers(2**63 - 1)),
        }

    def _draw(self, rng):
        best, best_n = None, 2.0
        for _ in range(_MAX_DRAWS):
            contig, start, end = self.stretches.sample(rng, self.window)
            ids, soft = self.fetch(contig, start, end)
            n_fraction = float(np.count_nonzero(ids[: end - start] == N)) / (end - start)
            if n_fraction <= self.max_n_fraction:
                return ids, soft
            if n_fraction < best_n:
                best, best_n = (ids, soft), n_fraction
        warnings.warn(f"{self.store_path}: no window with N fraction <= {self.max_n_fraction} in "
                      f"{_MAX_DRAWS} draws; using one with {best_n:.2f}", stacklevel=2)
        return best


class ValWindows(_StoreDataset):
    """Rank ``rank``'s strided share of the fixed validation windows (``windows.validation_windows``).

    Every rank gets the same number of samples, so DDP ranks run the same number of validation
    steps: shares that fall short repeat a window with nothing scored.
    """

    def __init__(self, store_path, names, windows, *, rank: int, world_size: int, window: int, seed: int):
        super().__init__(store_path, names, window)
        self.windows, self.seed = windows, seed
        self.indices = list(range(rank, -(-len(windows) // world_size) * world_size, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        index = self.indices[j]
        w = self.windows[index % len(self.windows)]
        ids, soft = self.fetch(w.contig, w.start, w.start + w.length)
        loss_mask = torch.zeros(self.window, dtype=torch.bool)
        if index < len(self.windows):
            loss_mask[w.score_start : w.score_end] = True
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_VAL_STREAM, index)))
        return {
            "input_ids": torch.from_numpy(ids),
            "softmask": torch.from_numpy(soft),
            "loss_mask": loss_mask,
            "seed": int(rng.integers(2**63 - 1)),
        }


class RunBatchSampler(Sampler):
    """Micro-batches ``start .. stop - 1`` of a run, each a list of global sample numbers.

    Its length is the whole run (``stop``), as Lightning expects of a loader it resumes mid-epoch:
    the restored batch counter continues from ``start``.
    """

    def __init__(self, start: int, stop: int, batch_size: int):
        self.start, self.stop, self.batch_size = start, stop, batch_size

    def __len__(self) -> int:
        return self.stop

    def __iter__(self):
        for micro_batch in range(self.start, self.stop):
            first = micro_batch * self.batch_size
            yield list(range(first, first + self.batch_size))


class GenomeDataModule(pl.LightningDataModule):
    """Training windows sampled from a token store and fixed validation windows over its held-out
    regions (see ``genossm.train.windows``). The rank comes from the trainer when attached."""

    def __init__(self, config: DataConfig, seed: int = 0, accumulate_grad_batches: int = 1, max_steps: int = 1):
        super().__init__()
        self.config, self.seed = config, seed
        self.accumulate, self.max_steps = accumulate_grad_batches, max_steps
        self.rank, self.world_size = 0, 1
        self.layout = None

    def setup(self, stage=None):
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        if self.layout is not None:
            return
        store = TokenStore.open(self.config.store)
        self.layout = Layout.from_store(store)
        self.stretches = TrainingStretches(self.layout)
        if self.stretches.total == 0:
            raise GenossmError("no training bases left once the held-out regions are removed",
                               path=self.config.store)
        self.val_windows = validation_windows(self.layout, self.config.window, "val", self.config.max_val_windows)
        if self.val_windows and not any(self._has_base(store, w) for w in self.val_windows):
            # nothing to score: no val_loss to log, nor to choose best.ckpt by
            raise GenossmError('the held-out "val" windows have no A/C/G/T base to score (all N?)',
                               path=self.config.store)

    def _has_base(self, store, w) -> bool:
        ids, _ = store.window(self.layout.names[w.contig], w.start, w.start + w.length)
        return bool((ids[w.score_start : w.score_end] < N).any())

    @property
    def num_val_windows(self) -> int:
        return len(self.val_windows)

    def train_dataset(self) -> TrainWindows:
        c = self.config
        return TrainWindows(c.store, self.layout.names, self.stretches, window=c.window, batch_size=c.batch_size,
                            accumulate_grad_batches=self.accumulate, seed=self.seed, rank=self.rank,
                            max_n_fraction=c.max_n_fraction, rc_augment=c.rc_augment)

    def train_loader(self, start_step: int = 0) -> DataLoader:
        """The training loader of this rank from optimizer step ``start_step`` to the end of the run."""
        sampler = RunBatchSampler(start_step * self.accumulate, self.max_steps * self.accumulate,
                                  self.config.batch_size)
        return self._loader(self.train_dataset(), batch_sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.trainer.global_step if self.trainer is not None else 0)

    def val_dataloader(self) -> DataLoader:
        c = self.config
        dataset = ValWindows(c.store, self.layout.names, self.val_windows, rank=self.rank,
                             world_size=self.world_size, window=c.window, seed=self.seed)
        return self._loader(dataset, batch_size=c.val_batch_size or c.batch_size, shuffle=False)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        batch["seed"] = batch["seed"].tolist()  # masking seeds stay host ints (no device sync to read them)
        return batch

    def _loader(self, dataset, **kwargs) -> DataLoader:
        workers = self.config.num_workers
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, num_workers=workers, persistent_workers=workers > 0,
                          worker_init_fn=_leave_stop_signals_to_main,
                          pin_memory=self.config.pin_memory and on_gpu, **kwargs)


def _leave_stop_signals_to_main(worker_id: int) -> None:
    """SLURM (and ``kill`` of a process group) signals every process of the job, workers included.
    A worker killed by one would fail the main process before it writes its checkpoint
    (callbacks.StepCheckpoint), which shuts the workers down itself."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
