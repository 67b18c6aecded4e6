"""Masked-language-model training of a GenoSSM in Lightning.

The module holds the network as attribute ``model`` (so checkpoint state-dict keys start with
``model.``) and saves its hyper-parameters with ``model`` = the GenoSSMConfig dict: that is what
``GenoSSM.from_pretrained(<ckpt>)`` reads back.
"""

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from genossm.model import GenoSSM, GenoSSMConfig
from genossm.tokenize import MASK, N
from genossm.train.config import MaskingConfig, OptimConfig

_NO_DECAY_NAMES = ("A_log", "D")  # SSM decay rates and skip gains: weight decay would bias them to 0


def mask_tokens(ids: torch.Tensor, eligible: torch.Tensor, seeds, config: MaskingConfig):
    """BERT-style masking, each row from its own seed (so it is reproducible on resume).

    ids (B, L) long; eligible (B, L) bool. Selects ``mask_prob`` of the eligible positions, and at
    least one in a row that has any (so a validation window with few bases still scores one); of
    those, ``mask_token_frac`` become [MASK], ``random_token_frac`` a random base, the rest stay.
    Returns (inputs (B, L) long, selected (B, L) bool).
    """
    rows = []
    for seed in seeds:
        g = torch.Generator(device=ids.device)
        g.manual_seed(int(seed))
        pick = torch.rand(ids.shape[1], generator=g, device=ids.device)  # (L,)
        action = torch.rand(ids.shape[1], generator=g, device=ids.device)  # (L,)
        base = torch.randint(0, 4, (ids.shape[1],), generator=g, device=ids.device)  # (L,)
        rows.append((pick, action, base))
    pick, action, base = (torch.stack(parts) for parts in zip(*rows))  # (B, L) each
    # the eligible position of lowest draw is selected whenever any is: adding it changes only empty rows
    lowest = torch.where(eligible, pick, 2.0).argmin(1, keepdim=True)  # (B, 1)
    selected = eligible & ((pick < config.mask_prob) | torch.zeros_like(eligible).scatter_(1, lowest, True))
    to_mask = selected & (action < config.mask_token_frac)
    to_random = selected & ~to_mask & (action < config.mask_token_frac + config.random_token_frac)
    inputs = torch.where(to_mask, torch.full_like(ids, MASK), ids)
    inputs = torch.where(to_random, base, inputs)
    return inputs, selected


class MaskedLMModule(pl.LightningModule):
    """15% masked-base prediction on real bases; AdamW with warmup + cosine; held-out metrics."""

    def __init__(self, model: dict, optim: dict | None = None, masking: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.model = GenoSSM(GenoSSMConfig.from_dict(model))
        self.optim = OptimConfig(**{k: tuple(v) if k == "betas" else v for k, v in (optim or {}).items()})
        self.masking = MaskingConfig(**(masking or {}))
        self._val_sums = None

    def forward(self, input_ids):
        return self.model(input_ids)

    def masked_loss(self, batch):
        """Per-base cross-entropy sums over the masked positions: (weighted loss sum, weight sum,
        plain loss sum, correct count, count)."""
        ids = batch["input_ids"].long()  # (B, L)
        eligible = (ids < N) & batch["loss_mask"]  # real bases A/C/G/T only
        inputs, selected = mask_tokens(ids, eligible, batch["seed"], self.masking)
        logits = self.model(inputs).float()  # (B, L, V)
        # Dense over all positions, zero-weighted off the selection: indexing by the mask would
        # need its count on the host (a device sync every step).
        losses = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none") * selected  # (B, L)
        weights = torch.where(batch["softmask"], self.masking.softmask_weight, 1.0) * selected  # (B, L)
        correct = ((logits.argmax(-1) == ids) & selected).sum()
        return (losses * weights).sum(), weights.sum(), losses.sum(), correct, selected.sum()

    def training_step(self, batch, batch_idx):
        weighted, weight, _, _, _ = self.masked_loss(batch)
        loss = weighted / weight.clamp_min(1e-6)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        self.log("lr", self.lr_schedulers().get_last_lr()[0], batch_size=batch["input_ids"].shape[0])
        return loss

    def on_validation_epoch_start(self):
        self._val_sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count

    def validation_step(self, batch, batch_idx):
        _, _, loss_sum, correct, count = self.masked_loss(batch)
        self._val_sums += torch.stack([loss_sum, correct, count]).double()

    def on_validation_epoch_end(self):
        # count >= 1: GenomeDataModule refuses validation windows without a base, and mask_tokens
        # selects one in every window that has any
        loss_sum, correct, count = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum").tolist()
        loss = loss_sum / count
        metrics = {"val_loss": loss, "val_accuracy": correct / count, "val_perplexity": math.exp(loss),
                   "val_bits_per_base": loss / math.log(2), "val_bases": count}
        for name, value in metrics.items():  # already reduced over ranks: sync_dist averages equal values
            self.log(name, value, prog_bar=name == "val_loss", sync_dist=True)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim < 2 or name.rsplit(".", 1)[-1] in _NO_DECAY_NAMES  # norms, biases, A_log, D
            (no_decay if skip else decay).append(p)
        o = self.optim
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=o.betas, eps=o.eps,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(o.warmup_steps, self.trainer.max_steps, o.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float):
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, cosine 1 -> ``min_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
