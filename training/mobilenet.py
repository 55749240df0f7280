"""Conventional MobileNetV2 for 95 x 95 patches, and the plain form the equivariant net exports to.

Same layout as torchvision's MobileNetV2 but with ReLU (not ReLU6), odd feature maps with centred
stride-2 sampling, the circular input mask and a masked global average pool. With ``pool_order=N``
it is the exported equivariant net: the pooled channels are max-pooled over each group field.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import ArchConfig, BlockSpec, ConvSpec, build_plan
from training.layers import BlurPool, GroupMaxPool, InputMask, MaskedAvgPool


def conv_unit(spec: ConvSpec) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU) (+ anti-aliasing blur) for one planned unit."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel,
            stride=spec.stride,
            padding=spec.padding,
            groups=spec.in_channels if spec.depthwise else 1,
            bias=False,
        ),
        nn.BatchNorm2d(spec.out_channels),
    ]
    if spec.relu:
        layers.append(nn.ReLU(inplace=True))
    if spec.blur_padding is not None:
        layers.append(BlurPool(spec.out_channels, 2, spec.blur_padding, spec.blur_kernel))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> project 1x1, plus the input when shapes allow."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.units = nn.ModuleList(conv_unit(u) for u in spec.units)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for unit in self.units:
            y = unit(y)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 on the circular field of view; ``pool_order > 1`` adds group max pooling."""

    def __init__(self, cfg: ArchConfig, pool_order: int = 1) -> None:
        super().__init__()
        plan = build_plan(cfg)
        self.cfg = cfg
        self.input_mask = InputMask(cfg.input_size)
        self.stem = conv_unit(plan.stem)
        self.blocks = nn.ModuleList(InvertedResidual(b) for b in plan.blocks)
        self.last = conv_unit(plan.last)
        self.pool = MaskedAvgPool(plan.final_size)
        self.group_pool = GroupMaxPool(pool_order, plan.last.out_channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(plan.last.out_channels // pool_order, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier (group-invariant for ``pool_order > 1``)."""
        x = self.stem(self.input_mask(x))
        for block in self.blocks:
            x = block(x)
        pooled: torch.Tensor = self.group_pool(self.pool(self.last(x)))
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.dropout(self.features(x)))
        return logits

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs of the exported graph (eval mode: dropout is the identity)."""
        f = self.features(x)
        logits: torch.Tensor = self.classifier(self.dropout(f))
        return logits, f
