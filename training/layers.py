"""Plain PyTorch layers shared by both networks: input mask, masked pooling, group pooling."""

from __future__ import annotations

import torch
from torch import nn

from engine.preprocess import circular_mask


def disc(size_px: int) -> torch.Tensor:
    """The engine's circular field of view for a ``size_px`` map (radius ``size_px / 2``) as floats."""
    return torch.from_numpy(circular_mask(size_px, size_px / 2.0).astype("float32"))


class InputMask(nn.Module):
    """Multiply the input by the engine's circular mask (idempotent on engine-prepared input)."""

    mask: torch.Tensor

    def __init__(self, size_px: int) -> None:
        super().__init__()
        self.register_buffer("mask", disc(size_px)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class MaskedAvgPool(nn.Module):
    """Global average over the circular disc of the final feature map: N x C x S x S -> N x C."""

    weight: torch.Tensor

    def __init__(self, size_px: int) -> None:
        super().__init__()
        m = disc(size_px)
        self.register_buffer("weight", (m / m.sum())[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(dim=(2, 3))


class GroupMaxPool(nn.Module):
    """Max over the ``order`` channels of each regular field: N x (F*order) -> N x F (invariant)."""

    def __init__(self, order: int, channels: int) -> None:
        super().__init__()
        if channels % order:
            raise ValueError(f"{channels} channels do not split into fields of {order}")
        self.order = order
        self.fields = channels // order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == 1:
            return x
        # constant target shape: one Reshape in the ONNX graph, no Shape/Gather ops
        return x.reshape(-1, self.fields, self.order).amax(dim=2)
