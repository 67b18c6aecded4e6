"""Chunked layer-by-layer inference equals one full pass (flat device memory schedule)."""

import pytest
import torch

from genossm.model import GenoSSM, GenoSSMConfig
from genossm.model.longseq import long_forward


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "rc"])
def model(request):
    torch.manual_seed(0)
    m = GenoSSM(GenoSSMConfig(d_model=16, n_layer=3, d_state=4, rc_equivariant=request.param))
    for p in m.parameters():  # unit-scale weights so differences would show
        p.data.normal_(0, 0.5)
    for layer in m.layers:
        for direction in (layer.mixer.fwd, layer.mixer.rev):
            direction.A_log.data = torch.log(torch.rand_like(direction.A_log) * 2 + 0.5)
    return m.double().eval()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 16, 61])
def test_chunked_logits_equal_full_pass(model, chunk):
    ids = torch.randint(0, 5, (61,), generator=torch.Generator().manual_seed(chunk))
    full = model(ids[None])[0]
    chunked = long_forward(model, ids, chunk_size=chunk, dtype=torch.float64,
                           buffer_dtype=torch.float64)
    torch.testing.assert_close(chunked.double(), full.double(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1, None])
def test_chunked_hidden_states_equal_full_pass(model, layer, tmp_path):
    ids = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(3))
    _, states = model(ids[None], output_hidden_states=True)
    expected = states[-1 if layer is None else layer][0]
    got = long_forward(model, ids, chunk_size=9, dtype=torch.float64, output="hidden",
                       layer=layer, buffer_dtype=torch.float64, buffer_path=tmp_path / "h.bin")
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)


def test_bfloat16_activations_with_float32_weights(model):
    # the GPU setting: float32 weights, bf16 activations under autocast
    ids = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(5))
    model32 = GenoSSM(model.config)
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    full = model32.eval()(ids[None])[0]
    got = long_forward(model32, ids, chunk_size=16, dtype=torch.bfloat16,
                       buffer_dtype=torch.bfloat16)
    assert got.dtype == torch.float32 and got.shape == full.shape
    error = ((got - full).norm() / full.norm()).item()
    assert 1e-5 < error < 0.05  # bf16 rounding shows, and nothing beyond it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("output,chunk", [("logits", 37), ("hidden", 37), ("logits", 2)])
def test_cuda_staged_copies_equal_full_pass(model, output, chunk):
    # on CUDA the host copies go through pinned staging buffers with deferred write-backs
    ids = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(7))
    model32 = GenoSSM(model.config)
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    model32 = model32.cuda().eval()
    with torch.no_grad():
        logits, states = model32(ids[None].cuda(), output_hidden_states=True)
    expected = (logits if output == "logits" else states[-1])[0].cpu()
    got = long_forward(model32, ids, chunk_size=chunk, output=output)  # 2: halo longer than a chunk
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-4, atol=1e-4)


def test_rejects_unknown_output(model):
    with pytest.raises(ValueError, match="output must be"):
        long_forward(model, torch.zeros(4, dtype=torch.long), output="bogus")
