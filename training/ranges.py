"""Activation ranges for data-free quantization (Nagel et al. 2019): the pure maths.

Every Conv output of the folded network is modelled per channel by the Gaussian of its batch norm
(mean, std). A tensor's range covers ``mean +- k std`` of every channel, clipped at 0 after a ReLU;
a residual Add sums independent Gaussians. :func:`data_free_ranges` walks an exported folded graph
and gives every tensor onnxruntime quantizes (Conv, Relu and Add outputs, and the input) its range.

numpy only: the ONNX graph and the batch-norm models are read, never changed, and nothing is run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnx

    from training.dfq import PreActivation

Range = tuple[float, float]  # (low, high) of a tensor, always containing 0

UNIT_WEIGHT_SUFFIX = ".0.weight"  # a unit's Conv weight is ``<unit>.0.weight`` (its module path)


@dataclass(frozen=True)
class Gaussian:
    """Per-channel Gaussian model of a tensor; ``relu``: it is, or sums, a ReLU output."""

    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    relu: bool = False


def unit_of(weight_name: str) -> str | None:
    """The unit whose Conv has the weight ``weight_name``; None for a Conv with fixed weights (the
    anti-aliasing blurs), which has no batch-norm model."""
    if not weight_name.endswith(UNIT_WEIGHT_SUFFIX):
        return None
    return weight_name.removesuffix(UNIT_WEIGHT_SUFFIX)


def gaussian_range(mean: NDArray[np.float64], std: NDArray[np.float64], k: float, relu: bool) -> Range:
    """Per-tensor range covering ``mean +- k std`` of every channel (``[0, .]`` after a ReLU)."""
    lo = float(np.min(mean - k * std))
    hi = float(np.max(mean + k * std))
    if relu:
        lo, hi = 0.0, max(hi, 1e-6)
    return min(lo, 0.0), max(hi, 0.0)


def input_range(mean: tuple[float, float, float], std: tuple[float, float, float]) -> Range:
    """Exact range of the engine's prepared input: ``(x/255 - mean)/std`` for x in 0..255, and 0."""
    m, s = np.asarray(mean), np.asarray(std)
    lows, highs = -m / s, (1 - m) / s
    return min(0.0, float(lows.min())), max(0.0, float(highs.max()))


def sum_of(a: Gaussian, b: Gaussian) -> Gaussian:
    """The model of ``a + b`` with independent channels: means and variances add."""
    return Gaussian(a.mean + b.mean, np.sqrt(a.std**2 + b.std**2), relu=False)


def interval_sum(a: Range, b: Range) -> Range:
    """The range of ``a + b`` whatever their distributions: the ends add."""
    return a[0] + b[0], a[1] + b[1]


def data_free_ranges(
    graph: onnx.GraphProto,
    stats: Mapping[str, PreActivation],
    relu_units: set[str],
    input_bounds: Range,
    k: float,
) -> dict[str, Range]:
    """Range of every Conv, Relu and Add output (and the input) of an exported folded net.

    Conv weights are named ``<unit>.0.weight`` (the unit's module path), which ties each Conv to
    its BN model in ``stats``. A residual Add sums independent Gaussians; where a ReLU output is in
    the sum (a residual around the first block), the Gaussian range would cut its one-sided tail,
    so the input ranges are added instead.
    """
    gauss: dict[str, Gaussian] = {}
    ranges: dict[str, Range] = {}
    for inp in graph.input:
        ranges[inp.name] = input_bounds
    for node in graph.node:
        out = node.output[0] if node.output else ""
        if node.op_type == "Mul" and node.input[0] in ranges and out and not gauss:
            ranges[out] = ranges[node.input[0]]  # the input mask: x * {0, 1}
        elif node.op_type == "Conv":
            unit = unit_of(node.input[1])
            if unit is None:
                # the fixed anti-aliasing blur: a convex combination of its input (and zero padding)
                if node.input[0] not in ranges:
                    raise KeyError(f"Conv {node.name} ({node.input[1]!r}) has no BN model and no input range")
                ranges[out] = ranges[node.input[0]]
                if node.input[0] in gauss:
                    gauss[out] = gauss[node.input[0]]
                continue
            if unit not in stats:
                raise KeyError(f"Conv {node.name} weight {node.input[1]!r} has no BN model")
            st = stats[unit]
            g = Gaussian(st.mean.double().numpy(), st.std.double().numpy(), unit in relu_units)
            gauss[out] = g
            ranges[out] = gaussian_range(g.mean, g.std, k, g.relu)
        elif node.op_type == "Relu" and node.input[0] in gauss:
            g = gauss[node.input[0]]
            gauss[out] = Gaussian(g.mean, g.std, relu=True)
            ranges[out] = gaussian_range(g.mean, g.std, k, True)
        elif node.op_type == "Add" and all(i in gauss for i in node.input):
            a, b = gauss[node.input[0]], gauss[node.input[1]]
            g = sum_of(a, b)
            gauss[out] = g
            if a.relu or b.relu:
                ranges[out] = interval_sum(ranges[node.input[0]], ranges[node.input[1]])
            else:
                ranges[out] = gaussian_range(g.mean, g.std, k, False)
    return ranges
