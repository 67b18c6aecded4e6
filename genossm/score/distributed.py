"""Several devices: Lightning predict with DDP, one process per device, read-outs gathered in order.

Lightning's ``ddp`` strategy starts the other ranks by re-running the current command (the
``genossm`` CLI or the user's script), so every rank plans the same passes (planning is
deterministic) and runs its share of the batches: batch ``b`` goes to rank ``b % world_size``.
The ranks then exchange their read-outs (``all_gather_object``) and each puts them back in pass
order, so the input order of variants and regions is kept. Only rank 0 should write outputs:
check :func:`genossm.score.passes.is_global_zero`. Interactive sessions (notebooks) cannot re-run themselves: use
one device there.
"""

import sys

import pytorch_lightning as pl
import torch
from tqdm import tqdm

from genossm.score.passes import run_batch


class PassPredictor(pl.LightningModule):
    """predict_step = :func:`genossm.score.passes.run_batch` on this rank's share of the batches."""

    def __init__(self, model, dataset, dtype):
        super().__init__()
        self.model = model
        self.dataset = dataset
        self.autocast_dtype = dtype

    def predict_dataloader(self):
        shard = range(self.global_rank, len(self.dataset), self.trainer.world_size)
        return torch.utils.data.DataLoader(torch.utils.data.Subset(self.dataset, shard), batch_size=None)

    def predict_step(self, batch, batch_idx):
        return run_batch(self.model, batch, self.device, self.autocast_dtype)


class _StderrProgress(pl.Callback):
    """Rank 0's batches on a tqdm bar on stderr (Lightning's own bar writes to stdout)."""

    def __init__(self, desc):
        self.desc, self.bar = desc, None

    def on_predict_start(self, trainer, module):
        if trainer.is_global_zero:
            total = len(range(0, len(module.dataset), trainer.world_size))
            self.bar = tqdm(total=total, desc=self.desc, unit="batch", file=sys.stderr, dynamic_ncols=True)

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.bar is not None:
            self.bar.update(1)

    def on_predict_end(self, trainer, module):
        if self.bar is not None:
            self.bar.close()


def predict_distributed(model, dataset, accelerator: str, devices: int, dtype, progress: bool, desc: str):
    """(pass index, read-out) pairs of every batch of ``dataset``, on every rank."""
    trainer = pl.Trainer(
        accelerator="gpu" if accelerator == "cuda" else accelerator,
        devices=devices,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        callbacks=[_StderrProgress(desc)] if progress else [],
    )
    module = PassPredictor(model.eval(), dataset, dtype)
    outputs = trainer.predict(module, return_predictions=True)
    local = [(index, out) for indices, outs in outputs for index, out in zip(indices, outs)]
    gathered = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, local)
    return [item for part in gathered for item in part]
