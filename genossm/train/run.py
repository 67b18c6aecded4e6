"""``train(config) -> run_dir``: one masked-LM training run, resumable, on one device or many.

Run directory layout (``-o RUN_DIR`` or ``out_dir`` in the config)::

    RUN_DIR/
      config.yaml                  the resolved config (file + overrides) the run uses
      checkpoints/last.ckpt        latest state: every trainer.checkpoint_every_n_steps, on
                                   SIGUSR1/SIGTERM, and at the end (what --resume continues from);
                                   on a step that validates, written after its validation
      checkpoints/best.ckpt        lowest val_loss so far (only when the store has "val" regions);
                                   validation runs every trainer.val_every_n_steps and at the end
      logs/csv/version_N/metrics.csv        train_loss, lr, val_loss, val_accuracy,
                                            val_perplexity, val_bits_per_base, val_bases per step
      logs/tensorboard/version_N/           the same for TensorBoard
                                   (each start or resume of the run adds a version_N)
      model/config.json, model/model.safetensors
                                   the final model (GenoSSM.save_pretrained), written at the end

Checkpoints are Lightning ``.ckpt`` files that load with ``torch.load(weights_only=True)``; the
network's weights are under ``state_dict["model.*"]`` and its config under
``hyper_parameters["model"]``.

Resume (``resume=True``) continues from ``checkpoints/last.ckpt`` at the same optimizer step with
the same data (see ``genossm.train.data``); a SLURM job requeued after SIGUSR1 resumes on its own.
SIGUSR1 or SIGTERM (``scancel``, preemption, ``kill``) writes ``last.ckpt`` at the end of the
optimizer step in flight and stops with an error that says so (``callbacks.StepCheckpoint``);
Ctrl-C stops at once, leaving the last periodic checkpoint.

On a SLURM cluster, one task per GPU; Lightning takes the ranks from the SLURM environment and
``trainer.devices`` / ``trainer.num_nodes`` follow the job (``srun --ntasks=N`` works too)::

    #SBATCH --nodes=2 --ntasks-per-node=4 --gpus-per-node=4
    #SBATCH --signal=USR1@180 --requeue    # USR1 to every task 3 min before the time limit
    srun genossm train -c cfg.yaml -o runs/hg38

Without SLURM, ``trainer.devices=N`` starts N processes itself (Lightning DDP).
"""

import os
import warnings
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from genossm.errors import GenossmError
from genossm.train.callbacks import AtomicCheckpointIO, StderrProgressBar, StepCheckpoint
from genossm.train.config import TrainConfig, save_config
from genossm.train.data import GenomeDataModule
from genossm.train.module import MaskedLMModule
from genossm.utils.atomic import atomic_output


def train(config: TrainConfig, run_dir=None, resume: bool = False) -> Path:
    """Train (or with ``resume`` continue) a run; returns the run directory (layout above)."""
    if not (run_dir or config.out_dir):
        raise GenossmError("no run directory: pass -o RUN_DIR or set out_dir in the config")
    run_dir = Path(run_dir or config.out_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = resume or (os.environ.get("SLURM_RESTART_COUNT", "0") != "0" and last.exists())
    if resume and not last.exists():
        raise GenossmError("nothing to resume: checkpoints/last.ckpt does not exist", path=run_dir)
    if not resume and last.exists():
        raise GenossmError("already holds a training run (checkpoints/last.ckpt): pass --resume to continue it "
                           "or choose another run directory", path=run_dir)

    pl.seed_everything(config.seed, verbose=False)  # identical initial weights on every rank
    data = GenomeDataModule(config.data, config.seed, config.trainer.accumulate_grad_batches,
                            config.trainer.max_steps)
    data.setup()
    module = MaskedLMModule(model=config.model.to_dict(), optim=config.to_dict()["optim"],
                            masking=asdict(config.masking))
    has_val = data.num_val_windows > 0
    trainer = _trainer(config, run_dir, last, has_val)
    if _compiles(config.trainer.compile, trainer):
        module.model.compile_blocks()  # in place: checkpoints and save_pretrained keep the plain key names
    if trainer.is_global_zero:
        _write_config(config, run_dir / "config.yaml", resume)
    with warnings.catch_warnings():
        # our loader resumes mid-epoch by construction (data order = f(seed, step, rank))
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule=data, ckpt_path=last if resume else None, weights_only=True)
    if trainer.is_global_zero:
        module.model.save_pretrained(run_dir / "model")  # atomic: a temporary sibling renamed into place
        rank_zero_info(f"final model: {run_dir / 'model'}")
    return run_dir


def _trainer(config: TrainConfig, run_dir: Path, last: Path, has_val: bool) -> pl.Trainer:
    t = config.trainer
    on_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    precision = t.precision if t.precision != "auto" else ("bf16-mixed" if on_gpu else "32-true")
    if on_gpu:
        torch.set_float32_matmul_precision("high")
    devices, num_nodes, plugins = t.devices, t.num_nodes, [AtomicCheckpointIO()]
    slurm = _slurm_layout(config)
    if slurm is not None:
        devices, num_nodes = slurm
        plugins.append(SLURMEnvironment(auto_requeue=False))  # requeue is StepCheckpoint's job
    distributed = num_nodes > 1 or (devices != "auto" and devices > 1)
    callbacks = []
    if has_val:  # Lightning runs checkpoint callbacks last, in this order: last.ckpt records this one's score
        callbacks.append(ModelCheckpoint(dirpath=last.parent, filename="best", monitor="val_loss", mode="min",
                                         save_top_k=1, enable_version_counter=False))
    callbacks.append(StepCheckpoint(last, t.checkpoint_every_n_steps, t.val_every_n_steps if has_val else None))
    if t.progress_bar:
        callbacks.append(StderrProgressBar())
    try:
        return pl.Trainer(
            accelerator=t.accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
            strategy="ddp" if distributed else "auto", plugins=plugins,
            max_steps=t.max_steps, max_epochs=-1,  # one epoch = the whole run (see data.RunBatchSampler)
            accumulate_grad_batches=t.accumulate_grad_batches,
            gradient_clip_val=config.optim.grad_clip or None,
            val_check_interval=t.val_every_n_steps * t.accumulate_grad_batches, check_val_every_n_epoch=None,
            limit_val_batches=None if has_val else 0, num_sanity_val_steps=0,
            log_every_n_steps=t.log_every_n_steps, use_distributed_sampler=False,
            logger=[CSVLogger(run_dir / "logs", name="csv"), TensorBoardLogger(run_dir / "logs", name="tensorboard")],
            callbacks=callbacks, enable_progress_bar=t.progress_bar, default_root_dir=run_dir,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:  # e.g. no GPU, too few GPUs
        raise GenossmError(f"cannot set up training on accelerator={t.accelerator}, devices={devices}, "
                           f"num_nodes={num_nodes}: {err}", where="trainer") from None


def _compiles(setting, trainer: pl.Trainer) -> bool:
    """trainer.compile: "auto" compiles on CUDA only (on CPU, Inductor's compile time outweighs the gain)."""
    return trainer.strategy.root_device.type == "cuda" if setting == "auto" else setting


def _slurm_layout(config: TrainConfig):
    """(devices per node, nodes) of a job launched by srun, or None outside one."""
    if not SLURMEnvironment.detect():
        return None
    tasks = int(os.environ["SLURM_NTASKS"])
    nodes = int(os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES") or 1)
    if tasks % nodes:
        raise GenossmError(f"SLURM started {tasks} tasks on {nodes} nodes: use the same --ntasks-per-node on "
                           "every node (one task per GPU)")
    per_node = tasks // nodes
    t = config.trainer
    if t.devices not in ("auto", per_node) or (nodes > 1 and t.num_nodes not in (1, nodes)):
        raise GenossmError(f"trainer.devices={t.devices}, trainer.num_nodes={t.num_nodes} but srun started "
                           f"{per_node} task(s) per node on {nodes} node(s): launch one task per device "
                           "(srun --ntasks-per-node=DEVICES) or set trainer.devices=auto")
    os.environ.setdefault("SLURM_NTASKS_PER_NODE", str(per_node))  # `srun --ntasks=N` leaves it unset
    return per_node, nodes


def _write_config(config: TrainConfig, path: Path, resume: bool) -> None:
    if resume and path.exists():
        before = _flatten(yaml.safe_load(path.read_text()) or {})
        after = _flatten(config.to_dict())
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if changed:
            warnings.warn(f"{path}: resuming with changed settings: {', '.join(changed)}", stacklevel=3)
    with atomic_output(path) as tmp:
        save_config(config, tmp)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
