"""Plain PyTorch layers shared by both networks: input mask, anti-aliasing blur, masked pooling,
group pooling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from training.field_of_view import disc_mask


def disc(size_px: int) -> torch.Tensor:
    """The circular field of view of a ``size_px`` map (:mod:`training.field_of_view`) as floats."""
    return torch.from_numpy(disc_mask(size_px).astype("float32"))


class InputMask(nn.Module):
    """Multiply the input by the engine's circular mask (idempotent on engine-prepared input)."""

    mask: torch.Tensor

    def __init__(self, size_px: int) -> None:
        super().__init__()
        self.register_buffer("mask", disc(size_px)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def binomial_kernel(size: int = 3) -> torch.Tensor:
    """Normalised 2-D binomial low-pass (``[1, 2, 1]`` outer itself for 3): symmetric under D4."""
    row = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=torch.float32)
    kernel = torch.outer(row, row)
    return kernel / kernel.sum()


class BlurPool(nn.Module):
    """Fixed binomial low-pass on every channel, then subsampling (Zhang 2019, anti-aliasing).

    Depthwise and identical on every channel, so it commutes with rotations of the plane and with
    any permutation of channels: it keeps an equivariant net equivariant. Not trainable; exported
    as an ordinary depthwise ``Conv``.
    """

    kernel: torch.Tensor

    def __init__(self, channels: int, stride: int, padding: int, size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.stride = stride
        self.padding = padding
        self.register_buffer("kernel", binomial_kernel(size)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, stride=self.stride, padding=self.padding, groups=self.channels)


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
