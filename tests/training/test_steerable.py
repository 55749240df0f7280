"""The equivariant depthwise convolution: rotated filter copies, equivariance, export, cost."""

from __future__ import annotations

import pytest
import torch
from e2cnn import gspaces
from e2cnn import nn as enn

from training.steerable import SteerableDepthwiseConv, expand_filters, steerable_basis


@pytest.mark.parametrize("order", [4, 8, 12])
def test_basis_is_band_limited_and_rotates(order: int) -> None:
    basis = steerable_basis(order, 3)
    assert basis.shape[1:] == (order, 3, 3)
    assert 1 < basis.shape[0] < 9  # fewer functions than free 3x3 pixels: band-limited
    step = order // 4
    for i in range(4):
        rotated = torch.rot90(basis[:, 0], i, dims=(1, 2))
        torch.testing.assert_close(basis[:, i * step], rotated, rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", [4, 8, 12])
@pytest.mark.parametrize("seed", [0, 1])
def test_field_filters_are_rot90_copies(order: int, seed: int) -> None:
    torch.manual_seed(seed)
    gspace = gspaces.Rot2dOnR2(order)
    layer = SteerableDepthwiseConv(enn.FieldType(gspace, [gspace.regular_repr] * 3))
    bank = layer.filter_bank().detach().reshape(3, order, 3, 3)
    step = order // 4
    for i in range(1, 4):
        rotated = torch.rot90(bank[:, 0], i, dims=(1, 2))
        torch.testing.assert_close(bank[:, i * step], rotated, rtol=0, atol=1e-6)
        assert (bank[:, i * step] - bank[:, 0]).abs().max() > 1e-3  # not a symmetric filter
    # one weight vector per field: far fewer parameters than a free depthwise filter bank
    assert layer.weights.numel() == 3 * steerable_basis(order, 3).shape[0]
    assert layer.weights.numel() * order / (3 * order * 9) < 1


@pytest.mark.parametrize("order", [4, 8])
@pytest.mark.parametrize(("stride", "padding", "size"), [(1, 1, 11), (2, 0, 23), (2, 1, 5)])
def test_layer_is_equivariant(order: int, stride: int, padding: int, size: int) -> None:
    torch.manual_seed(0)
    gspace = gspaces.Rot2dOnR2(order)
    ftype = enn.FieldType(gspace, [gspace.regular_repr] * 2)
    layer = SteerableDepthwiseConv(ftype, 3, stride, padding)
    x = enn.GeometricTensor(torch.randn(2, ftype.size, size, size), ftype)
    for element in range(order):
        out_of_rotated = layer(x.transform(element)).tensor
        rotated_out = layer(x).transform(element).tensor
        if element % (order // 4) == 0:  # multiples of 90 degrees are exact on the pixel grid
            torch.testing.assert_close(out_of_rotated, rotated_out, rtol=0, atol=1e-5)
    # a free depthwise conv with the same shapes is not equivariant: the check can fail
    free = torch.nn.Conv2d(ftype.size, ftype.size, 3, stride, padding, groups=ftype.size)
    a = free(x.transform(order // 4).tensor)
    b = enn.GeometricTensor(free(x.tensor), ftype).transform(order // 4).tensor
    assert (a - b).abs().max() > 1e-2


def test_export_matches_layer() -> None:
    torch.manual_seed(0)
    gspace = gspaces.Rot2dOnR2(8)
    ftype = enn.FieldType(gspace, [gspace.regular_repr] * 4)
    layer = SteerableDepthwiseConv(ftype, 3, 2, 0)
    conv = layer.export()
    assert conv.groups == ftype.size and conv.weight.shape == (32, 1, 3, 3)
    x = torch.randn(2, 32, 11, 11)
    torch.testing.assert_close(conv(x), layer(enn.GeometricTensor(x, ftype)).tensor)


def test_expand_filters_shapes() -> None:
    basis = steerable_basis(4, 3)
    bank = expand_filters(torch.ones(5, basis.shape[0]), basis)
    assert bank.shape == (20, 1, 3, 3)
