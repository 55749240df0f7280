"""Tiny plain MobileNetV2s with non-trivial, BN-consistent batch-norm statistics for DFQ tests.

Random BN affine parameters spread over two orders of magnitude make per-tensor quantization
hard (what DFQ fixes); some fields get ``beta > 3 gamma`` so high-bias absorption has work to do.
Running statistics are then measured on random inputs, so the BN model of every pre-activation
roughly matches what the network computes. For the equivariant net everything is field-shared.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import ArchConfig
from training.export import to_plain
from training.mobilenet import MobileNetV2
from training.models import build_model

INPUT_PX = 95


def tiny_arch(arch: str = "equivariant", group_order: int = 4, antialias: bool = False) -> ArchConfig:
    return ArchConfig(arch=arch, group_order=group_order, width=0.25, antialias=antialias)


def _per_field(values: torch.Tensor, n: int) -> torch.Tensor:
    return values.reshape(-1, n).mean(dim=1).repeat_interleave(n)


@torch.no_grad()
def randomise_bn(model: MobileNetV2, seed: int = 0, batches: int = 2) -> MobileNetV2:
    """Give every BN random field-shared affine parameters, then BN-consistent running stats."""
    gen = torch.Generator().manual_seed(seed)
    n = int(model.group_pool.order)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        fields = bn.num_features // n
        gamma = torch.exp(torch.empty(fields).uniform_(-2.0, 1.0, generator=gen))
        beta = torch.randn(fields, generator=gen) * 0.5
        high = torch.rand(fields, generator=gen) < 0.3
        beta = torch.where(high, 3.5 * gamma + torch.rand(fields, generator=gen), beta)
        bn.weight.copy_(gamma.repeat_interleave(n))
        bn.bias.copy_(beta.repeat_interleave(n))
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(batches):
        model(random_input(16, gen))
    for bn in bns:
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.copy_(_per_field(bn.running_mean, n))
        bn.running_var.copy_(_per_field(bn.running_var, n))
    return model.eval()


def random_input(batch: int, gen: torch.Generator) -> torch.Tensor:
    """Normalised-looking inputs: smooth random colour fields plus noise."""
    coarse = torch.randn(batch, 3, 6, 6, generator=gen)
    smooth = nn.functional.interpolate(coarse, size=(INPUT_PX, INPUT_PX), mode="bilinear")
    return smooth + 0.3 * torch.randn(batch, 3, INPUT_PX, INPUT_PX, generator=gen)


def tiny_plain(
    arch: str = "equivariant", group_order: int = 4, seed: int = 0, antialias: bool = False
) -> MobileNetV2:
    """Plain (exported) tiny MobileNetV2 with randomised, BN-consistent statistics."""
    torch.manual_seed(seed)
    model = build_model(tiny_arch(arch, group_order, antialias))
    plain = to_plain(model)
    assert isinstance(plain, MobileNetV2)
    return randomise_bn(plain, seed)
