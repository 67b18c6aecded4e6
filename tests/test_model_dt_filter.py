"""Inference-time dt filter: calibration, what it changes and what it leaves alone."""

import math

import pytest
import torch

from genossm.kernels import selective_scan
from genossm.model import GenoSSM, GenoSSMConfig
from genossm.model.dt_filter import calibrate_dt_filter, channel_dts, clear_dt_filter
from genossm.model.longseq import long_forward


@pytest.fixture()
def model():
    torch.manual_seed(0)
    m = GenoSSM(GenoSSMConfig(d_model=16, n_layer=2, d_state=4))
    for p in m.parameters():  # unit-scale weights so that what the filter drops shows
        p.data.normal_(0, 0.5)
    for layer in m.layers:
        for direction in (layer.mixer.fwd, layer.mixer.rev):
            # half the channels at dt ~ 1e-4: horizons far past the 256-base calibration sequences
            direction.dt_proj.bias.data[:16] = math.log(math.expm1(1e-4))
            direction.A_log.data = torch.log(torch.rand_like(direction.A_log) + 0.5)
    return m.eval()


def _ids(seed, shape=(3, 256)):
    return torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(seed))


def test_filtered_channels_drop_the_quantile_and_others_keep_dt(model):
    ids = _ids(1)
    plain = [dt for *_, dt in channel_dts(model, ids)]
    summary = calibrate_dt_filter(model, ids, quantile=0.75)
    assert len(summary) == 4 and all(s["channels"] == 32 for s in summary)
    assert sum(s["filtered_channels"] for s in summary) > 0
    assert any(s["filtered_channels"] < s["channels"] for s in summary)
    # layer 0 (its input does not depend on the filter): the drop is exact
    for before, (layer, _, direction, after) in zip(plain[:2], channel_dts(model, ids)):
        assert layer == 0
        on = direction.dt_threshold > 0  # (E,)
        zero_share = (after[..., on] == 0).float().mean().item()
        assert abs(zero_share - 0.75) < 0.01  # on the calibration sequences themselves
        kept = after[..., on] != 0
        torch.testing.assert_close(after[..., on][kept], before[..., on][kept])
        torch.testing.assert_close(after[..., ~on], before[..., ~on], rtol=0, atol=0)


def test_calibration_in_passes_equals_one_pass(model):
    ids = _ids(6, (5, 64))
    calibrate_dt_filter(model, ids, quantile=0.95)
    whole = [layer.mixer.fwd.dt_threshold.clone() for layer in model.layers]
    calibrate_dt_filter(model, ids, quantile=0.95, positions_per_pass=100)  # one row of 64 per pass
    assert all(torch.equal(a, layer.mixer.fwd.dt_threshold) for a, layer in zip(whole, model.layers))
    assert any((a > 0).any() for a in whole)


def test_filter_changes_outputs_and_clearing_restores_them(model):
    ids = _ids(2, (2, 300))
    with torch.no_grad():
        plain = model(ids)
        calibrate_dt_filter(model, _ids(1), quantile=0.9)
        filtered = model(ids)
        clear_dt_filter(model)
        again = model(ids)
    assert (filtered - plain).abs().max() > 1e-3
    torch.testing.assert_close(again, plain, rtol=0, atol=0)


def test_no_channel_reaching_min_horizon_leaves_the_model_unchanged(model):
    ids = _ids(3, (1, 200))
    with torch.no_grad():
        plain = model(ids)
        summary = calibrate_dt_filter(model, _ids(1), quantile=0.9, min_horizon=math.inf)
        assert all(s["filtered_channels"] == 0 for s in summary)
        torch.testing.assert_close(model(ids), plain, rtol=0, atol=0)


def test_long_sequence_schedule_applies_the_filter_too(model):
    ids = _ids(4, (1, 150))[0]
    calibrate_dt_filter(model, _ids(1), quantile=0.9)
    model.double()
    with torch.no_grad():
        full = model(ids[None])[0]
    chunked = long_forward(model, ids, chunk_size=37, dtype=torch.float64, buffer_dtype=torch.float64)
    torch.testing.assert_close(chunked, full.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_filtered_positions_neither_decay_nor_write(dtype):
    # delta at its dtype's lowest value: softplus gives dt = 0 exactly, so the state passes through
    g = torch.Generator().manual_seed(5)
    u = torch.randn(1, 9, 3, generator=g).to(dtype)
    delta = torch.full((1, 9, 3), torch.finfo(dtype).min, dtype=dtype)
    A = -torch.rand(3, 4, generator=g) - 0.5
    B, C = torch.randn(1, 9, 4, generator=g).to(dtype), torch.randn(1, 9, 4, generator=g).to(dtype)
    h0 = torch.randn(1, 3, 4, generator=g)
    _, final = selective_scan(u, delta, A, B, C, delta_bias=torch.full((3,), 0.5), delta_softplus=True,
                              initial_state=h0, return_final_state=True)
    torch.testing.assert_close(final, h0, rtol=0, atol=0)


def test_threshold_is_not_saved_and_quantile_is_checked(model, tmp_path):
    calibrate_dt_filter(model, _ids(1), quantile=0.5)
    assert not any("dt_threshold" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="quantile"):
        calibrate_dt_filter(model, _ids(1), quantile=1.0)
    # 768 positions cannot tell the 0.9999 quantile from the largest dt
    with pytest.raises(ValueError, match="0.9999 needs more calibration positions than the 768 given"):
        calibrate_dt_filter(model, _ids(1), quantile=0.9999)
