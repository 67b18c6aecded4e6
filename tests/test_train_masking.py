"""Masked-LM objective: masking statistics, loss positions, soft-mask weights, optimizer setup."""

import math

import pytest
import torch

from train_helpers import one_thread  # noqa: F401 (fixture)

from genossm.tokenize import MASK, N, PAD
from genossm.train.config import MaskingConfig
from genossm.train.module import MaskedLMModule, mask_tokens, warmup_cosine

TINY = {"d_model": 16, "n_layer": 2}
pytestmark = pytest.mark.usefixtures("one_thread")


def random_ids(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 4, shape, generator=g)
    ids[:, 100:200] = N
    ids[:, -50:] = PAD
    return ids


def test_masking_statistics():
    ids = random_ids((4, 50_000))
    eligible = ids < N
    inputs, selected = mask_tokens(ids, eligible, [1, 2, 3, 4], MaskingConfig())
    n = int(selected.sum())
    assert abs(n / int(eligible.sum()) - 0.15) < 0.005
    assert not selected[~eligible].any()  # N and PAD are never chosen
    assert torch.equal(inputs[~selected], ids[~selected])  # unselected positions are untouched
    masked = (inputs[selected] == MASK).float().mean().item()
    changed_to_base = ((inputs[selected] != MASK) & (inputs[selected] != ids[selected])).float().mean().item()
    assert abs(masked - 0.8) < 0.01
    assert abs(changed_to_base - 0.1 * 0.75) < 0.01  # a random base differs from the original 3 times in 4
    assert (inputs[selected] != MASK).logical_and(inputs[selected] >= N).sum() == 0  # random tokens are bases


def test_masking_is_a_function_of_the_seeds():
    ids = random_ids((2, 5000))
    a = mask_tokens(ids, ids < N, [11, 12], MaskingConfig())
    b = mask_tokens(ids, ids < N, [11, 12], MaskingConfig())
    c = mask_tokens(ids, ids < N, [12, 11], MaskingConfig())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[1][0], c[1][1]) and not torch.equal(a[1][0], a[1][1])  # per row, not per batch


def batch(ids, loss_mask=None, softmask=None, seeds=(5, 6)):
    return {
        "input_ids": ids.to(torch.uint8),
        "loss_mask": torch.ones_like(ids, dtype=torch.bool) if loss_mask is None else loss_mask,
        "softmask": torch.zeros_like(ids, dtype=torch.bool) if softmask is None else softmask,
        "seed": list(seeds),
    }


def test_loss_counts_only_real_bases_inside_the_loss_mask():
    torch.manual_seed(0)
    module = MaskedLMModule(TINY)
    ids = random_ids((2, 600))
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, 250:550] = True
    _, _, _, _, count = module.masked_loss(batch(ids, loss_mask))
    selected = mask_tokens(ids, (ids < N) & loss_mask, [5, 6], module.masking)[1]
    assert int(count) == int(selected.sum()) and 0 < int(count) < 0.3 * 2 * 300
    ids_all_n = torch.full((2, 600), N)
    weighted, weight, plain, correct, count = module.masked_loss(batch(ids_all_n))
    assert int(count) == 0 and float(weighted.detach()) == 0.0


def test_softmask_weight_scales_lowercase_bases():
    torch.manual_seed(0)
    ids = random_ids((2, 600))
    soft = torch.zeros_like(ids, dtype=torch.bool)
    soft[:, :300] = True
    full = MaskedLMModule(TINY)
    down = MaskedLMModule(TINY, masking={"softmask_weight": 0.0})
    down.load_state_dict(full.state_dict())
    w_full, n_full, plain_full, _, _ = full.masked_loss(batch(ids, softmask=soft))
    w_down, n_down, plain_down, _, _ = down.masked_loss(batch(ids, softmask=soft))
    assert torch.allclose(w_full, plain_full) and torch.allclose(plain_full, plain_down)
    unmasked_only = batch(ids, loss_mask=~soft, softmask=soft)
    w_upper, n_upper, _, _, _ = full.masked_loss(unmasked_only)
    assert torch.allclose(w_down, w_upper) and n_down == n_upper  # weight 0: lowercase bases drop out


def test_optimizer_groups_and_schedule():
    module = MaskedLMModule(TINY, optim={"lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 10})
    module.trainer = type("T", (), {"max_steps": 110})()  # configure_optimizers reads only max_steps
    config = module.configure_optimizers()
    decay, no_decay = config["optimizer"].param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.model.named_parameters()}
    no_decay_names = [names[id(p)] for p in no_decay["params"]]
    assert all(names[id(p)].rsplit(".", 1)[-1] not in ("A_log", "D") and p.ndim >= 2 for p in decay["params"])
    assert any("A_log" in n for n in no_decay_names) and any(n.endswith(".D") or n == "D" for n in no_decay_names)
    f = warmup_cosine(10, 110, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_masked_loss_equals_cross_entropy_over_the_selected_positions():
    torch.manual_seed(0)
    module = MaskedLMModule(TINY, masking={"softmask_weight": 0.25})
    ids = random_ids((2, 600))
    soft = torch.zeros_like(ids, dtype=torch.bool)
    soft[:, 100:400] = True
    b = batch(ids, softmask=soft)
    weighted, weight, plain, correct, count = module.masked_loss(b)
    inputs, selected = mask_tokens(ids, ids < N, b["seed"], module.masking)
    picked = module.model(inputs)[selected]  # (n, V)
    losses = torch.nn.functional.cross_entropy(picked, ids[selected], reduction="none")
    weights = torch.where(soft[selected], 0.25, 1.0)
    assert int(count) == int(selected.sum()) > 0
    assert torch.allclose(plain, losses.sum()) and torch.allclose(weight, weights.sum())
    assert torch.allclose(weighted, (losses * weights).sum())
    assert int(correct) == int((picked.argmax(-1) == ids[selected]).sum())
