"""Lightning callbacks and plugins of a training run: preemption checkpoints, atomic checkpoint
files, and a progress bar on stderr."""

import contextlib
import os
import signal
import subprocess
import sys
import threading

import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Checkpoint, TQDMProgressBar
from pytorch_lightning.plugins import TorchCheckpointIO

from genossm.errors import GenossmError
from genossm.utils.atomic import atomic_output


class TrainingInterrupted(GenossmError):
    """Training stopped on a signal after writing a checkpoint to resume from."""


STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)  # SLURM's: time limit (--signal), scancel, preemption


class StepCheckpoint(Checkpoint):
    """Writes ``path`` at the end of an optimizer step: every ``every_n_steps`` steps, after the
    last step, and on SIGUSR1 or SIGTERM, after which the run stops.

    A step that validates (every ``val_every_n_steps`` and the last; None: no validation) ends
    after its validation: Lightning resumes a checkpoint written before a step's validation past
    that validation, and the checkpoint's record of the best val_loss would lag one behind (as a
    ``Checkpoint`` this callback runs after ``ModelCheckpoint(monitor="val_loss")``). The last step
    validates inside ``fit`` (``trainer.should_stop``, as early stopping does), so best.ckpt counts
    the final model, and its checkpoint is written inside the loop: one written after ``fit``
    returns records a finished epoch, and a run extended from it (a larger ``max_steps`` and
    ``--resume``) would log its steps one too high.

    Signals: the handler only records the signal. At the next optimizer-step boundary, once every
    rank agrees (one all-reduce per step), the checkpoint is written at once (and again after the
    step's validation, if it validates and the job lives that long: resumed from the first, a run
    skips that one validation), SIGUSR1 under SLURM requeues the job (``scontrol requeue``), and
    the run stops before the next step. Lightning's own SLURM handler saves inside the signal
    handler instead, mid-step: that loses the gradients accumulated so far (the resumed step
    differs) and can deadlock DDP ranks caught in different collectives. SIGTERM (``scancel``,
    preemption) only stops; outside SLURM both stop, so a killed local run resumes too. Lightning
    restores the previous handlers when fitting ends.
    """

    def __init__(self, path, every_n_steps: int, val_every_n_steps=None):
        self.path, self.every_n_steps, self.val_every_n_steps = path, every_n_steps, val_every_n_steps
        self.received, self.stopping, self.after_validation = 0, None, False

    def _record(self, signum, frame):
        self.received = signum

    def on_train_start(self, trainer, pl_module):
        self.received, self.stopping, self.after_validation = 0, None, False
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in STOP_SIGNALS:  # after Lightning registered its own handlers, replacing them
            signal.signal(signum, self._record)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: finish the optimizer step first
        step, signum = trainer.global_step, self._agreed_signal(trainer)
        last = step >= trainer.max_steps  # reached only at an optimizer-step boundary
        validates = self.val_every_n_steps is not None and (last or step % self.val_every_n_steps == 0)
        if validates and step % self.val_every_n_steps:
            trainer.should_stop = True  # Lightning then validates this step, off the validation grid
        due = bool(signum) or last or step % self.every_n_steps == 0
        if due and (signum or not validates):
            trainer.save_checkpoint(self.path, weights_only=False)
        self.after_validation = due and validates
        if signum:
            self._stop(trainer, signum)

    def on_validation_end(self, trainer, pl_module):
        if self.after_validation:
            self.after_validation = False
            trainer.save_checkpoint(self.path, weights_only=False)

    # the first hook after the step's metrics (and validation) reach the loggers
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stopping is not None:
            raise self.stopping

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.validating and trainer.global_step % self.val_every_n_steps:
            # After the last step's validation, off the grid: a restart from here does not pass the
            # validation again, where Lightning would count the step for the loggers (as it does on
            # the grid), so the checkpoint counts it.
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] += 1

    def _stop(self, trainer, signum):
        if signum == signal.SIGUSR1 and trainer.is_global_zero and _slurm_job_id():
            subprocess.run(["scontrol", "requeue", _slurm_job_id()], check=False)
        self.stopping = TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} after step {trainer.global_step}; checkpoint written "
            "(continue with --resume)", path=self.path)

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
