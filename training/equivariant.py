"""Rotation-equivariant MobileNetV2 (C_N, regular fields) with e2cnn, and its export to plain PyTorch.

The layer plan is the conventional net's (:func:`training.config.build_plan`): same channels,
filter sizes, strides and paddings. 1x1 and stem convolutions are ``R2Conv``, the depthwise
convolution is :class:`SteerableDepthwiseConv`, normalisation is ``InnerBatchNorm``. Features are
pooled over the disc, then max-pooled over each field's N channels (rotation invariant) before
the classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from e2cnn import gspaces
from e2cnn import nn as enn
from torch import nn

from training.config import ArchConfig, BlockSpec, ConvSpec, build_plan
from training.layers import BlurPool, GroupMaxPool, InputMask, MaskedAvgPool
from training.mobilenet import InvertedResidual, MobileNetV2
from training.steerable import SteerableDepthwiseConv


def _regular(gspace: Any, channels: int) -> Any:
    order = gspace.fibergroup.order()
    if channels % order:
        raise ValueError(f"{channels} channels are not a whole number of C{order} regular fields")
    return enn.FieldType(gspace, [gspace.regular_repr] * (channels // order))


def _unit(gspace: Any, spec: ConvSpec, in_type: Any) -> Any:
    out_type = _regular(gspace, spec.out_channels)
    layers: list[Any]
    if spec.depthwise:
        layers = [SteerableDepthwiseConv(in_type, spec.kernel, spec.stride, spec.padding)]
    else:
        layers = [
            enn.R2Conv(in_type, out_type, spec.kernel, padding=spec.padding, stride=spec.stride, bias=False)
        ]
    layers.append(enn.InnerBatchNorm(out_type))
    if spec.relu:
        layers.append(enn.ReLU(out_type, inplace=True))
    if spec.blur_padding is not None:
        layers.append(EquivariantBlurPool(out_type, spec.blur_padding, spec.blur_kernel))
    return enn.SequentialModule(*layers)


class EquivariantBlurPool(enn.EquivariantModule):  # type: ignore[misc]
    """:class:`training.layers.BlurPool` on a GeometricTensor (a D4-symmetric kernel on every
    channel commutes with the C_N action on regular fields)."""

    def __init__(self, field_type: Any, padding: int, kernel: int) -> None:
        super().__init__()
        self.in_type = field_type
        self.out_type = field_type
        self.kernel = kernel
        self.blur = BlurPool(field_type.size, 2, padding, kernel)

    def forward(self, x: Any) -> Any:
        return enn.GeometricTensor(self.blur(x.tensor), self.out_type)

    def evaluate_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, c, h, w = input_shape
        size = (h + 2 * self.blur.padding - self.kernel) // 2 + 1
        return b, c, size, (w + 2 * self.blur.padding - self.kernel) // 2 + 1


class EquivariantInvertedResidual(nn.Module):
    """Inverted residual block on regular fields; takes and returns a GeometricTensor."""

    def __init__(self, gspace: Any, spec: BlockSpec, in_type: Any) -> None:
        super().__init__()
        units = []
        field_type = in_type
        for u in spec.units:
            units.append(_unit(gspace, u, field_type))
            field_type = units[-1].out_type
        self.units = nn.ModuleList(units)
        self.residual = spec.residual
        self.out_type = field_type

    def forward(self, x: Any) -> Any:
        y = x
        for unit in self.units:
            y = unit(y)
        return x + y if self.residual else y


class EquivariantMobileNetV2(nn.Module):
    """C_N-equivariant MobileNetV2 producing rotation-invariant logits from a plain tensor."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        if cfg.arch != "equivariant":
            raise ValueError("EquivariantMobileNetV2 needs cfg.arch == 'equivariant'")
        plan = build_plan(cfg)
        self.cfg = cfg
        self.gspace = gspaces.Rot2dOnR2(cfg.group_order)
        self.in_type = enn.FieldType(self.gspace, [self.gspace.trivial_repr] * 3)
        self.input_mask = InputMask(cfg.input_size)
        self.stem = _unit(self.gspace, plan.stem, self.in_type)
        blocks = []
        field_type = self.stem.out_type
        for b in plan.blocks:
            blocks.append(EquivariantInvertedResidual(self.gspace, b, field_type))
            field_type = blocks[-1].out_type
        self.blocks = nn.ModuleList(blocks)
        self.last = _unit(self.gspace, plan.last, field_type)
        self.pool = MaskedAvgPool(plan.final_size)
        self.group_pool = GroupMaxPool(cfg.group_order, plan.last.out_channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(plan.last.out_channels // cfg.group_order, cfg.num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.stem(enn.GeometricTensor(self.input_mask(x), self.in_type))
        for block in self.blocks:
            g = block(g)
        y = self.group_pool(self.pool(self.last(g).tensor))
        logits: torch.Tensor = self.classifier(self.dropout(y))
        return logits


def _export_unit(src: Any, dst: nn.Sequential) -> None:
    modules = [m for _, m in src.named_children()]
    conv = modules[0].export()
    bn = modules[1].export()
    target = dst[0]
    if not isinstance(target, nn.Conv2d):
        raise TypeError(f"expected a Conv2d to export into, got {type(target).__name__}")
    with torch.no_grad():
        target.weight.copy_(conv.weight)
    dst[1].load_state_dict(bn.state_dict())


def to_plain(model: EquivariantMobileNetV2) -> MobileNetV2:
    """Plain PyTorch copy of ``model`` (eval mode, no e2cnn needed to run it)."""
    was_training = model.training
    model.eval()
    plain = MobileNetV2(model.cfg, pool_order=model.cfg.group_order)
    _export_unit(model.stem, plain.stem)
    for eb, pb in zip(model.blocks, plain.blocks, strict=True):
        assert isinstance(eb, EquivariantInvertedResidual) and isinstance(pb, InvertedResidual)
        for eu, pu in zip(eb.units, pb.units, strict=True):
            assert isinstance(pu, nn.Sequential)
            _export_unit(eu, pu)
    _export_unit(model.last, plain.last)
    plain.classifier.load_state_dict(model.classifier.state_dict())
    plain.eval()
    model.train(was_training)
    return plain
