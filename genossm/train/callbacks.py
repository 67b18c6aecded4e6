"""Lightning callbacks and plugins of a training run: preemption checkpoints, atomic checkpoint
files, and a progress bar on stderr."""

import contextlib
import os
import signal
import subprocess
import sys
import threading

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.plugins import TorchCheckpointIO

from genossm.errors import GenossmError
from genossm.utils.atomic import atomic_output


class TrainingInterrupted(GenossmError):
    """Training stopped on a signal after writing a checkpoint to resume from."""


class FinalCheckpoint(pl.Callback):
    """Write ``path`` after the last optimizer step, from inside the training loop, unless the
    periodic checkpoint (every ``every_n_steps``) just wrote it. A checkpoint taken after ``fit``
    returns records a finished epoch: a run extended from it (a larger ``max_steps`` and
    ``--resume``) would log its steps one too high."""

    def __init__(self, path, every_n_steps: int):
        self.path, self.every_n_steps = path, every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # global_step reaches max_steps only at an optimizer-step boundary
        step = trainer.global_step
        if step >= trainer.max_steps and step % self.every_n_steps:
            trainer.save_checkpoint(self.path, weights_only=False)


class SignalCheckpoint(pl.Callback):
    """On SIGUSR1 or SIGTERM: finish the optimizer step in flight, write ``path``, and stop.

    The handler only records the signal; the checkpoint is written at the next optimizer-step
    boundary, once every rank agrees (one all-reduce per step), and the run stops right after that
    step's metrics are logged (before any validation). Lightning's own SLURM handler saves inside
    the signal handler instead, mid-step: that loses the gradients accumulated so far (the resumed
    step differs) and can deadlock DDP ranks caught in different collectives.
    Under SLURM, SIGUSR1 (``#SBATCH --signal=USR1@120``) also requeues the job
    (``scontrol requeue``), which restarts it with ``--resume`` semantics; SIGTERM (``scancel``,
    preemption) only stops. Outside SLURM both stop, so a killed local run resumes too.
    Lightning restores the previous handlers when fitting ends.
    """

    def __init__(self, path, signals=(signal.SIGUSR1, signal.SIGTERM)):
        self.path, self.signals = path, signals
        self.received, self.stopping = 0, None

    def _record(self, signum, frame):
        self.received = signum

    def on_train_start(self, trainer, pl_module):
        self.received, self.stopping = 0, None
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in self.signals:  # after Lightning registered its own handlers, replacing them
            signal.signal(signum, self._record)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: finish the optimizer step first
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        if signum == signal.SIGUSR1 and trainer.is_global_zero and _slurm_job_id():
            subprocess.run(["scontrol", "requeue", _slurm_job_id()], check=False)
        self.stopping = TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} after step {trainer.global_step}; checkpoint written "
            "(continue with --resume)", path=self.path)

    # the first hook after the step's metrics reach the loggers
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stopping is not None:
            raise self.stopping

    def on_validation_start(self, trainer, pl_module):
        if self.stopping is not None:
            raise self.stopping

    def _agreed_signal(self, trainer) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return self.received
        flag = torch.tensor([self.received], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def _slurm_job_id():
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary sibling and renames it into place, so a kill during
    the write never leaves a truncated ``last.ckpt`` behind."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_output(path) as tmp:
            torch.save(checkpoint, tmp)


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bar, on stderr (stdout is kept for data)."""

    def init_sanity_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()
