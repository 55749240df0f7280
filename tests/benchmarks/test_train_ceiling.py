"""The three nets ``benchmarks/train_ceiling.py`` compares: same convolutions, less around them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

pytest.importorskip("e2cnn")

from benchmarks.train_ceiling import NETS, network, parallel_rate, step_seconds
from training.config import ArchConfig
from training.equivariant import EquivariantMobileNetV2, to_plain

ARCH = ArchConfig(arch="equivariant", group_order=4, width=0.25, antialias=True)


def convs(net: nn.Module) -> list[tuple[object, ...]]:
    return [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups)
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]


def test_the_plain_nets_have_the_equivariant_nets_convolutions() -> None:
    e2cnn = network(ARCH, "e2cnn")
    assert isinstance(e2cnn, EquivariantMobileNetV2) and e2cnn.training
    exported = convs(to_plain(e2cnn))
    assert convs(network(ARCH, "plain")) == exported
    assert convs(network(ARCH, "convs only")) == exported


def test_convs_only_has_no_batch_norm_or_relu_and_still_learns() -> None:
    net = network(ARCH, "convs only")
    assert not [m for m in net.modules() if isinstance(m, nn.BatchNorm2d | nn.ReLU)]
    assert [m for m in network(ARCH, "plain").modules() if isinstance(m, nn.BatchNorm2d)]
    x = torch.randn(2, 3, ARCH.input_size, ARCH.input_size)
    net(x).sum().backward()  # type: ignore[no-untyped-call]
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", NETS)
def test_every_net_takes_a_timed_step(kind: str) -> None:
    seconds = step_seconds(ARCH, kind, batch=2, threads=1, steps=1)
    assert math.isfinite(seconds) and seconds > 0


def test_processes_step_on_shares_of_the_batch_at_once() -> None:
    rate = parallel_rate(ARCH, "convs only", batch=4, processes=2, steps=1)
    assert math.isfinite(rate) and rate > 0
