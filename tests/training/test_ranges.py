"""Data-free activation ranges: the pure maths, and the graph walk on a hand-built ONNX graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.dfq import PreActivation
from training.ranges import (
    Gaussian,
    data_free_ranges,
    gaussian_range,
    input_range,
    interval_sum,
    sum_of,
    unit_of,
)

onnx = pytest.importorskip("onnx")


def _a(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


@pytest.mark.parametrize(
    ("mean", "std", "k", "relu", "expected"),
    [
        # the widest channel sets each end: 1 - 2 * 0.5 = 0 and -2 - 2 * 1 = -4; 1 + 1 = 2
        (_a(1.0, -2.0), _a(0.5, 1.0), 2.0, False, (-4.0, 2.0)),
        # all channels positive: the range is widened to contain 0
        (_a(3.0, 4.0), _a(0.5, 0.25), 2.0, False, (0.0, 4.5)),
        # all channels negative: the range is widened to contain 0
        (_a(-3.0), _a(0.5), 1.0, False, (-3.5, 0.0)),
        # after a ReLU the range starts at 0 ...
        (_a(1.0, -2.0), _a(0.5, 1.0), 2.0, True, (0.0, 2.0)),
        # ... and never collapses to a point (onnxruntime needs a positive scale)
        (_a(-5.0), _a(1.0), 1.0, True, (0.0, 1e-6)),
    ],
)
def test_gaussian_range(
    mean: np.ndarray, std: np.ndarray, k: float, relu: bool, expected: tuple[float, float]
) -> None:
    assert gaussian_range(mean, std, k, relu) == pytest.approx(expected, abs=0)


def test_gaussian_range_covers_every_channel() -> None:
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=64), rng.uniform(0.1, 2.0, size=64)
    lo, hi = gaussian_range(mean, std, 6.0, False)
    assert lo <= 0.0 <= hi
    assert np.all(mean - 6 * std >= lo) and np.all(mean + 6 * std <= hi)
    assert lo == float(np.min(mean - 6 * std)) and hi == float(np.max(mean + 6 * std))


def test_input_range_holds_every_prepared_pixel_and_no_more() -> None:
    mean, std = (0.70, 0.54, 0.69), (0.24, 0.28, 0.22)
    lo, hi = input_range(mean, std)
    pixels = np.arange(256, dtype=np.float64)[:, None] / 255.0
    prepared = (pixels - np.asarray(mean)) / np.asarray(std)
    assert lo == pytest.approx(float(prepared.min()), rel=1e-12)
    assert hi == pytest.approx(float(prepared.max()), rel=1e-12)


def test_sum_of_adds_means_and_variances() -> None:
    a = Gaussian(_a(1.0, -1.0), _a(3.0, 1.0), relu=True)
    b = Gaussian(_a(2.0, 0.5), _a(4.0, 1.0))
    s = sum_of(a, b)
    np.testing.assert_array_equal(s.mean, [3.0, -0.5])
    np.testing.assert_allclose(s.std, [5.0, math.sqrt(2.0)], rtol=1e-15)
    assert s.relu is False  # a sum is not a ReLU output, even of one


def test_sum_of_matches_independent_samples() -> None:
    rng = np.random.default_rng(1)
    a, b = Gaussian(_a(0.5), _a(2.0)), Gaussian(_a(-1.0), _a(1.5))
    samples = rng.normal(0.5, 2.0, 200_000) + rng.normal(-1.0, 1.5, 200_000)
    s = sum_of(a, b)
    assert abs(samples.mean() - s.mean[0]) < 0.03 and abs(samples.std() - s.std[0]) < 0.03


def test_interval_sum() -> None:
    assert interval_sum((-1.0, 2.0), (0.0, 5.0)) == (-1.0, 7.0)


@pytest.mark.parametrize(
    ("weight", "unit"),
    [
        ("stem.0.weight", "stem"),
        ("features.3.conv.1.0.weight", "features.3.conv.1"),
        ("stem.3.kernel", None),  # the anti-aliasing blur's fixed kernel
        ("onnx::Conv_123", None),
        ("stem.0.bias", None),
    ],
)
def test_unit_of(weight: str, unit: str | None) -> None:
    assert unit_of(weight) == unit


def _bn(mean: list[float], std: list[float]) -> PreActivation:
    return PreActivation(torch.tensor(mean), torch.tensor(std))


def _graph(nodes: list[onnx.NodeProto]) -> onnx.GraphProto:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 5])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    return helper.make_graph(nodes, "ranges", [x], [y])


def test_data_free_ranges_walk_the_graph() -> None:
    """Input mask -> conv+ReLU -> blur -> two convs -> their sum -> plus the ReLU branch."""
    from onnx import helper

    nodes = [
        helper.make_node("Mul", ["x", "mask"], ["m"]),
        helper.make_node("Conv", ["m", "a.0.weight"], ["ca"], name="conv_a"),
        helper.make_node("Relu", ["ca"], ["ra"]),
        helper.make_node("Conv", ["ra", "a.3.kernel"], ["rb"], name="blur"),
        helper.make_node("Conv", ["rb", "b.0.weight"], ["cb"], name="conv_b"),
        helper.make_node("Conv", ["rb", "c.0.weight"], ["cc"], name="conv_c"),
        helper.make_node("Add", ["cb", "cc"], ["s1"]),
        helper.make_node("Add", ["s1", "rb"], ["s2"]),
    ]
    stats = {
        "a": _bn([1.0, 2.0], [1.0, 1.0]),
        "b": _bn([0.0, 1.0], [1.0, 2.0]),
        "c": _bn([1.0, -1.0], [2.0, 1.0]),
    }
    ranges = data_free_ranges(_graph(nodes), stats, {"a"}, (-3.0, 2.0), 3.0)
    root5 = math.sqrt(5.0)
    expected = {
        "x": (-3.0, 2.0),
        "m": (-3.0, 2.0),  # the mask keeps the input's range
        "ca": (0.0, 5.0),  # unit a ends in a ReLU: [0, max(mean + 3 std)]
        "ra": (0.0, 5.0),
        "rb": (0.0, 5.0),  # the blur averages its input: same range
        "cb": (-5.0, 7.0),
        "cc": (-5.0, 7.0),
        "s1": (-3 * root5, 1 + 3 * root5),  # independent Gaussians: std sqrt(1 + 4) per channel
        "s2": (-3 * root5, 6 + 3 * root5),  # a ReLU output in the sum: the ends add
    }
    assert set(ranges) == set(expected)
    for name, (lo, hi) in expected.items():
        assert ranges[name] == pytest.approx((lo, hi), rel=1e-6), name


def test_data_free_ranges_refuse_a_conv_without_a_model() -> None:
    from onnx import helper

    unit_conv = [helper.make_node("Conv", ["x", "z.0.weight"], ["cz"], name="conv_z")]
    with pytest.raises(KeyError, match="no BN model"):
        data_free_ranges(_graph(unit_conv), {}, set(), (-1.0, 1.0), 3.0)
    blur_of_nothing = [helper.make_node("Conv", ["nowhere", "k"], ["cb"], name="blur")]
    with pytest.raises(KeyError, match="no input range"):
        data_free_ranges(_graph(blur_of_nothing), {}, set(), (-1.0, 1.0), 3.0)
