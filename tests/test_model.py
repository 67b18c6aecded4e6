import json

import pytest
import torch

from conftest import REPO
from genossm.model import GenoSSM, GenoSSMConfig
from genossm.model.conv import anticausal_conv, causal_conv
from genossm.model.offload import MAX_PENDING
from genossm.tokenize import COMPLEMENT, N, PAD

TINY = dict(d_model=32, n_layer=2, d_state=8)


def test_forward_shapes_and_hidden_states():
    torch.manual_seed(0)
    model = GenoSSM(GenoSSMConfig(**TINY))
    ids = torch.randint(0, 4, (3, 57))
    logits = model(ids)
    assert logits.shape == (3, 57, model.config.vocab_size)
    logits2, states = model(ids, output_hidden_states=True)
    assert torch.equal(logits, logits2)
    assert len(states) == TINY["n_layer"] + 1
    assert all(s.shape == (3, 57, TINY["d_model"]) for s in states)


@pytest.mark.parametrize("length", [1, 9, 131])
def test_reverse_complement_equivariance_float32(length):
    torch.manual_seed(length)
    model = GenoSSM(GenoSSMConfig(**TINY, rc_equivariant=True))
    ids = torch.randint(0, 4, (2, length))
    ids[0, length // 2] = N
    ids[1, -(length // 3 + 1):] = PAD
    comp = torch.as_tensor(COMPLEMENT).long()
    logits = model(ids)
    logits_rc = model(comp[ids].flip(1))
    expected = logits.flip(1)[..., comp]
    assert ((logits_rc - expected).norm() / expected.norm()).item() <= 1e-5
    _, states = model(ids, output_hidden_states=True)
    assert states[-1].shape[-1] == TINY["d_model"]


def test_gradient_reaches_every_parameter():
    torch.manual_seed(1)
    model = GenoSSM(GenoSSMConfig(**TINY))
    model(torch.randint(0, 5, (2, 40))).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def _gradients(checkpointing, ids, dtype=None, freeze=()):
    torch.manual_seed(3)
    model = GenoSSM(GenoSSMConfig(**TINY, checkpointing=checkpointing)).train()
    for name, param in model.named_parameters():
        param.requires_grad_(name not in freeze)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = model(ids).float().square().mean()
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("mode", [True, "offload"])
def test_checkpointing_gives_the_same_gradients(mode):
    ids = torch.randint(0, 4, (2, 33), generator=torch.Generator().manual_seed(2))
    plain, recomputed = _gradients(False, ids), _gradients(mode, ids)
    for name, grad in plain.items():
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_offload_recomputes_under_the_forward_autocast_and_skips_frozen_parameters():
    ids = torch.randint(0, 4, (2, 29), generator=torch.Generator().manual_seed(6))
    frozen = {"layers.0.mixer.in_proj.weight", "layers.1.norm.weight"}
    plain = _gradients(True, ids, torch.bfloat16, frozen)
    offload = _gradients("offload", ids, torch.bfloat16, frozen)
    for name, grad in plain.items():
        if name in frozen:
            assert grad is None and offload[name] is None
        else:
            torch.testing.assert_close(offload[name], grad, rtol=0, atol=0, msg=name)


def test_checkpointing_mode_is_validated():
    with pytest.raises(ValueError, match="checkpointing must be"):
        GenoSSMConfig(checkpointing="host")


def test_save_pretrained_and_reload(tmp_path):
    torch.manual_seed(4)
    model = GenoSSM(GenoSSMConfig(**TINY, rc_equivariant=True)).eval()
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["d_model"] == 32
    again = GenoSSM.from_pretrained(tmp_path / "m")
    ids = torch.randint(0, 7, (1, 25))
    assert torch.equal(model(ids), again(ids))
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model": model.config.to_dict()}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    assert torch.equal(model(ids), GenoSSM.from_pretrained(tmp_path / "last.ckpt")(ids))


def test_compile_blocks_keeps_state_dict_keys_and_outputs(tmp_path):
    torch.manual_seed(5)
    model = GenoSSM(GenoSSMConfig(**TINY)).eval()
    keys = list(model.state_dict())
    ids = torch.randint(0, 7, (2, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(ids)
    torch.compiler.reset()  # Dynamo's cache is per process: no graphs from other tests
    assert model.compile_blocks(backend="aot_eager") is model  # Inductor compiles for minutes on CPU
    assert list(model.state_dict()) == keys  # checkpoints and save_pretrained see the plain names
    with torch.no_grad():
        torch.testing.assert_close(model(ids), expected)
    torch.compiler.reset()
    model.save_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(GenoSSM.from_pretrained(tmp_path / "m")(ids), expected)


def test_from_pretrained_errors(tmp_path):
    from genossm.errors import GenossmError

    with pytest.raises(GenossmError, match="no such model"):
        GenoSSM.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenossmError, match="config.json"):
        GenoSSM.from_pretrained(tmp_path / "empty")
    fasta = tmp_path / "ref.fa"  # -m given a file that is not a checkpoint
    fasta.write_text(">chr1\nACGT\n")
    with pytest.raises(GenossmError, match="not a genossm model: .*UnpicklingError") as err:
        GenoSSM.from_pretrained(fasta)
    assert "\n" not in str(err.value) and str(fasta) in str(err.value)
    GenoSSM(GenoSSMConfig(d_model=16, n_layer=2)).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"d_model": 16, "n_layer": 2,')
    with pytest.raises(GenossmError, match="unreadable model directory .*JSONDecodeError"):
        GenoSSM.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(GenoSSMConfig(d_model=32, n_layer=2).to_json())
    with pytest.raises(GenossmError, match="weights do not fit the model config"):
        GenoSSM.from_pretrained(tmp_path / "m")


def test_config_json_round_trip_and_validation():
    cfg = GenoSSMConfig(d_model=64, n_layer=3, rc_equivariant=True)
    assert GenoSSMConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys: bogus"):
        GenoSSMConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="even d_model"):
        GenoSSMConfig(d_model=33, rc_equivariant=True)


@pytest.mark.parametrize("chunk", [1, 2, 5, 16])
def test_conv_with_halos_equals_whole_sequence(chunk):
    torch.manual_seed(5)
    x, w, b = torch.randn(2, 23, 6), torch.randn(6, 4), torch.randn(6)
    whole_f, whole_r = causal_conv(x, w, b), anticausal_conv(x, w, b)
    zeros = torch.zeros(2, 3, 6)
    pad = torch.cat([zeros, x, zeros], dim=1)
    parts_f, parts_r = [], []
    for s in range(0, 23, chunk):
        e = min(s + chunk, 23)
        parts_f.append(causal_conv(x[:, s:e], w, b, halo_left=pad[:, s:s + 3]))
        parts_r.append(anticausal_conv(x[:, s:e], w, b, halo_right=pad[:, e + 3:e + 6]))
    torch.testing.assert_close(torch.cat(parts_f, 1), whole_f)
    torch.testing.assert_close(torch.cat(parts_r, 1), whole_r)
    # definition check against conv1d
    ref = torch.nn.functional.conv1d(torch.nn.functional.pad(x.transpose(1, 2), (3, 0)),
                                     w[:, None, :], b, groups=6).transpose(1, 2)
    torch.testing.assert_close(whole_f, ref)
    ref_r = torch.nn.functional.conv1d(torch.nn.functional.pad(x.flip(1).transpose(1, 2), (3, 0)),
                                       w[:, None, :], b, groups=6).transpose(1, 2).flip(1)
    torch.testing.assert_close(whole_r, ref_r)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_on_cuda_matches_checkpointing_and_keeps_block_inputs_off_the_gpu():
    """Same gradients as plain checkpointing (up to the embedding backward's atomic adds), and the
    n_layer block inputs plain checkpointing keeps on the GPU are not there."""
    config = dict(d_model=64, n_layer=8, d_state=8)
    ids = torch.randint(0, 4, (1, 1 << 17), device="cuda", generator=torch.Generator("cuda").manual_seed(7))
    grads, peaks = {}, {}
    for mode in (True, "offload"):
        torch.manual_seed(8)
        model = GenoSSM(GenoSSMConfig(**config, checkpointing=mode)).cuda().train()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids).float().logsumexp(-1).mean()
        loss.backward()
        torch.cuda.synchronize()
        peaks[mode] = torch.cuda.max_memory_allocated()
        grads[mode] = {name: p.grad for name, p in model.named_parameters()}
    for name, grad in grads[True].items():
        # the embedding's rows sum 131k positions' gradients in an order that changes from call to
        # call: 2e-5 apart (H200, 2026-12-02)
        rtol, atol = (1e-4, 1e-6) if name == "embedding.weight" else (1e-5, 1e-7)
        torch.testing.assert_close(grads["offload"][name], grad, rtol=rtol, atol=atol,
                                   msg=lambda message, name=name: f"{name}: {message}")
    block_input = ids.numel() * config["d_model"] * 4  # float32 residual stream
    # at most MAX_PENDING inputs still copying out, and two (in use, being fetched) in backward
    assert peaks["offload"] <= peaks[True] - (config["n_layer"] - MAX_PENDING - 2) * block_input


def test_block_saves_one_copy_of_each_activation_for_backward(monkeypatch):
    """Per position, a block keeps for backward the block input and its norm, x (the convs are
    redone in backward), the scan's inputs (u per direction, z; delta is remade from the low-rank
    dt input), its pre-gate output (the gated output, out_proj's input, is recomputed from it),
    and the small (dt, B, C) inputs: no conv pre-activations, padded copies of x, copy of z or
    delta. Measured on the custom-op path the GPU takes (its Triton kernels interpreted here)."""
    from genossm.kernels.scan import bidirectional
    from genossm.model.mixer import Block

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from bench_block_memory import saved_storages

    monkeypatch.setattr(bidirectional, "use_triton", lambda u: True)
    config = GenoSSMConfig(d_model=32, n_layer=1, d_state=4)
    length, width, inner = 200, config.d_model, config.d_inner
    torch.manual_seed(9)
    hidden = torch.randn(1, length, width, requires_grad=True)
    saved = saved_storages(Block(config), hidden, {length, length + config.d_conv - 1})
    small = 2 * (config.resolved_dt_rank + 2 * config.d_state)  # per direction: dt_low, B, C
    expected = 4 * (5 * inner + 3 * width + small + 1)  # float32; the 1: the norm's rsqrt
    assert sum(nbytes for _, _, nbytes in saved) / length == expected
