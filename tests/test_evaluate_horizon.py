"""Memory horizons: 1 / (mean dt x slowest |A|) per channel, from the dt the scan would use."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genossm.evaluate.horizon import horizon_summary, memory_horizons
from genossm.model import GenoSSM, GenoSSMConfig


def test_constant_dt_gives_the_closed_form():
    """dt_proj with zero weight: dt = softplus(bias) everywhere, whatever the input, so each
    channel's horizon is 1 / (softplus(bias) * min |A|)."""
    torch.manual_seed(0)
    model = GenoSSM(GenoSSMConfig(d_model=16, n_layer=2, d_state=4)).eval()
    expected = []
    for layer in model.layers:
        for direction in (layer.mixer.fwd, layer.mixer.rev):
            with torch.no_grad():
                direction.dt_proj.weight.zero_()
                direction.dt_proj.bias.uniform_(-12.0, 1.0)
                direction.A_log.uniform_(-2.0, 2.0)
            slowest = torch.exp(direction.A_log).min(dim=1).values
            expected.append(1 / (F.softplus(direction.dt_proj.bias).double() * slowest.double()).detach())
    ids = torch.randint(0, 4, (2, 37))
    got = memory_horizons(model, ids)
    assert [(h["layer"], h["direction"]) for h in got] == [(0, "forward"), (0, "reverse"),
                                                           (1, "forward"), (1, "reverse")]
    for h, want in zip(got, expected):
        np.testing.assert_allclose(h["horizons"], want.numpy(), rtol=1e-5)


@pytest.mark.parametrize("dt_min", [1e-3, 1e-6])


def test_initial_horizons_follow_dt_min(dt_min):
    """At init dt is its bias's softplus up to small input terms: horizons span up to ~1/dt_min."""
    torch.manual_seed(1)
    model = GenoSSM(GenoSSMConfig(d_model=64, n_layer=1, dt_min=dt_min)).eval()
    longest = max(h["horizons"].max() for h in memory_horizons(model, torch.randint(0, 4, (2, 256))))
    assert 0.3 / dt_min < longest < 3 / dt_min


def test_summary_counts_channels_reaching_each_length():
    horizons = [{"layer": 0, "direction": "forward", "horizons": np.array([10.0, 1e3, 2e6])}]
    (row,) = horizon_summary(horizons, (1000, 1 << 20))
    assert row == {"layer": 0, "direction": "forward", "longest": 2e6, "median": 1e3,
                   "channels_reaching": {"1000": 2, str(1 << 20): 1}}
