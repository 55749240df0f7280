"""True equivariant depthwise convolution for regular fields of C_N, built from a steerable basis.

Output channel ``i`` of a field is the input channel ``i`` convolved with the field's filter rotated
by ``2*pi*i/N``. The N rotated filters come from one weight vector per field through e2cnn's
band-limited steerable basis for a trivial -> regular kernel, so the layer has one filter's worth of
parameters per field and, once expanded, is an ordinary ``groups=channels`` convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from e2cnn import gspaces
from e2cnn import nn as enn
from torch import nn


def steerable_basis(group_order: int, kernel: int) -> torch.Tensor:
    """Basis of trivial -> regular C_N kernels: B x N x k x k, filter ``i`` rotated by ``2*pi*i/N``."""
    gspace = gspaces.Rot2dOnR2(group_order)
    conv = enn.R2Conv(
        enn.FieldType(gspace, [gspace.trivial_repr]),
        enn.FieldType(gspace, [gspace.regular_repr]),
        kernel_size=kernel,
        bias=False,
        initialize=False,
    )
    dim = conv.basisexpansion.dimension()
    eye = torch.eye(dim)
    with torch.no_grad():
        filters = [conv.basisexpansion(eye[b]) for b in range(dim)]
    return torch.stack(filters).reshape(dim, group_order, kernel, kernel).contiguous()


def expand_filters(weights: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Per-field weights F x B and basis B x N x k x k -> depthwise filter bank (F*N) x 1 x k x k."""
    bank = torch.einsum("fb,bnij->fnij", weights, basis)
    return bank.reshape(-1, 1, basis.shape[-2], basis.shape[-1])


class SteerableDepthwiseConv(enn.EquivariantModule):  # type: ignore[misc]
    """Depthwise conv on regular C_N fields: one learnable steerable filter per field."""

    def __init__(self, field_type: Any, kernel: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        order = field_type.gspace.fibergroup.order()
        if any(r.name != "regular" for r in field_type.representations):
            raise ValueError("SteerableDepthwiseConv needs regular fields only")
        self.in_type = field_type
        self.out_type = field_type
        self.order = order
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        basis = steerable_basis(order, kernel)
        self.register_buffer("basis", basis)
        fields = len(field_type)
        # He initialisation of the expanded filter (fan-in k*k for a depthwise filter).
        energy = float(basis.pow(2).sum(dim=0).mean())
        std = (2.0 / (kernel * kernel) / energy) ** 0.5
        self.weights = nn.Parameter(torch.randn(fields, basis.shape[0]) * std)

    def filter_bank(self) -> torch.Tensor:
        """The expanded (channels x 1 x k x k) filter bank."""
        return expand_filters(self.weights, self.basis)

    def forward(self, x: Any) -> Any:
        y = F.conv2d(
            x.tensor,
            self.filter_bank(),
            stride=self.stride,
            padding=self.padding,
            groups=self.in_type.size,
        )
        return enn.GeometricTensor(y, self.out_type)

    def evaluate_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, c, h, w = input_shape
        ho = (h + 2 * self.padding - self.kernel) // self.stride + 1
        wo = (w + 2 * self.padding - self.kernel) // self.stride + 1
        return b, c, ho, wo

    def export(self) -> nn.Conv2d:
        """Plain ``nn.Conv2d(groups=channels)`` with the expanded filters."""
        c = self.in_type.size
        conv = nn.Conv2d(c, c, self.kernel, stride=self.stride, padding=self.padding, groups=c, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.filter_bank())
        return conv
