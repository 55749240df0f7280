"""The weight average: its arithmetic, its state, and e2cnn's cached filters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.config import ArchConfig
from training.ema import WeightEMA
from training.equivariant import EquivariantMobileNetV2


def test_average_follows_the_decay_and_copies_counters() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(net, decay=0.5)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 7
    ema.update(net)  # warm-up decay min(0.5, 1/10) = 0.1
    torch.testing.assert_close(ema.model[0].weight, start + 0.9)
    assert int(ema.model[1].num_batches_tracked) == 7
    ema.update(net)  # decay min(0.5, 2/11) = 2/11
    torch.testing.assert_close(ema.model[0].weight, (start + 0.9) * 2 / 11 + (start + 1.0) * 9 / 11)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_constant_buffers_are_copied_exactly_and_batch_norm_statistics_averaged() -> None:
    torch.manual_seed(0)
    net = EquivariantMobileNetV2(ArchConfig(width=0.25, group_order=4, antialias=True))
    ema = WeightEMA(net, decay=0.999)
    for _ in range(300):  # through the warm-up, whose decays round in float32
        ema.update(net)
    mine = dict(ema.model.named_buffers())
    constants = [  # the steerable basis, the input mask, the blur kernels, the pooling weights
        (name, b)
        for name, b in net.named_buffers()
        if name.rsplit(".", 1)[-1] in ("basis", "sampled_basis", "mask", "kernel", "weight")
    ]
    assert len(constants) > 20
    for name, buffer in constants:  # an average of a constant drifts by rounding; a copy does not
        assert torch.equal(mine[name], buffer), name
    with torch.no_grad():
        for module in net.modules():
            if hasattr(module, "running_mean"):
                module.running_mean.add_(1.0)
    ema.update(net)
    means = [(name, b) for name, b in net.named_buffers() if name.endswith("running_mean")]
    assert means
    for name, buffer in means:  # averaged (about 0.97 of the old value kept), not copied
        assert 0.5 < float((mine[name] - buffer).abs().max()) < 1.0, name


def test_decay_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(nn.Linear(1, 1), decay=1.0)


def test_state_round_trip_and_fresh_filters_on_an_equivariant_net() -> None:
    torch.manual_seed(0)
    net = EquivariantMobileNetV2(ArchConfig(width=0.25, group_order=4))
    ema = WeightEMA(net, decay=0.9)
    x = torch.randn(2, 3, 95, 95)
    before = ema.model.eval()(x)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for _ in range(20):
        ema.update(net)
    after = ema.model.eval()(x)  # the eval-mode filters are rebuilt from the averaged weights
    assert float((after - before).abs().max()) > 1e-4
    again = WeightEMA(EquivariantMobileNetV2(ArchConfig(width=0.25, group_order=4)), decay=0.9)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 20
    torch.testing.assert_close(again.model.eval()(x), after)
