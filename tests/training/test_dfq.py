"""Data-free quantization maths: BN folding, cross-layer equalization, high-bias absorption,
bias correction, on tiny plain MobileNetV2s with randomised batch-norm statistics."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.training.dfq_models import random_input, tiny_plain
from training import dfq
from training.mobilenet import MobileNetV2

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["equivariant", "conventional"])
def plain(request: pytest.FixtureRequest) -> MobileNetV2:
    return tiny_plain(request.param)


@pytest.fixture(scope="module")
def equivariant() -> MobileNetV2:
    return tiny_plain("equivariant", group_order=4)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return random_input(6, torch.Generator().manual_seed(1))


def _logits(model: MobileNetV2, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _equalized(model: MobileNetV2) -> tuple[MobileNetV2, dict[str, dfq.PreActivation]]:
    folded, stats = dfq.fold_batchnorm(model)
    report = dfq.equalize(folded, stats)
    assert report.converged
    return folded, stats


def test_fold_preserves_function(plain: MobileNetV2, x: torch.Tensor) -> None:
    folded, stats = dfq.fold_batchnorm(plain)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert set(stats) == set(dfq.unit_names(plain))
    assert _max_rel(_logits(folded, x), _logits(plain, x)) < 1e-5
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())  # source untouched


def test_randomised_bn_makes_per_tensor_ranges_bad(plain: MobileNetV2) -> None:
    folded, _ = dfq.fold_batchnorm(plain)
    assert max(dfq.weight_range_ratio(folded).values()) > 5  # otherwise CLE has nothing to do


def test_cle_preserves_function(plain: MobileNetV2, x: torch.Tensor) -> None:
    folded, _ = dfq.fold_batchnorm(plain)
    before = _logits(folded, x)
    eq, _ = _equalized(plain)
    assert _max_rel(_logits(eq, x), before) < 1e-5


def test_cle_equalizes_paired_ranges(plain: MobileNetV2) -> None:
    folded, _ = dfq.fold_batchnorm(plain)
    eq, _ = _equalized(plain)
    n = dfq.field_size(eq)
    for pair in dfq.relu_pairs(eq):
        r1 = dfq.output_ranges(eq, pair.first).reshape(-1, n).amax(dim=1)
        r2 = dfq.input_ranges(eq, pair.second).reshape(-1, n).amax(dim=1)
        live = (r1 > 0) & (r2 > 0)
        torch.testing.assert_close(r1[live], r2[live], rtol=1e-4, atol=0.0)
    ratio_before = max(dfq.weight_range_ratio(folded).values())
    ratio_after = max(dfq.weight_range_ratio(eq).values())
    assert ratio_after < ratio_before


def test_cle_scales_are_shared_within_fields(equivariant: MobileNetV2) -> None:
    folded, _ = dfq.fold_batchnorm(equivariant)
    eq, _ = _equalized(equivariant)
    n = dfq.field_size(eq)
    assert n == 4
    scaled = 0
    for name in dfq.unit_names(eq):  # bias_after = bias_before / s: one s per field
        b0, b1 = dfq.conv_of(folded, name).bias, dfq.conv_of(eq, name).bias
        assert b0 is not None and b1 is not None
        live = (b0.abs() > 1e-2 * b0.abs().max()).reshape(-1, n).all(dim=1)
        ratio = (b1 / b0).detach().reshape(-1, n)[live]
        if ratio.numel():
            assert float((ratio / ratio[:, :1] - 1).abs().max()) < 1e-5, name
        scaled += int(((ratio - 1).abs() > 1e-3).any())
    assert scaled > 5


def test_scales_function_is_field_shared() -> None:
    gen = torch.Generator().manual_seed(0)
    r1, r2 = torch.rand(12, generator=gen) + 0.1, torch.rand(12, generator=gen) + 0.1
    s = dfq.equalization_scales(r1, r2, 4).reshape(3, 4)
    assert torch.equal(s, s[:, :1].expand(3, 4))
    expected = torch.sqrt(r1.reshape(3, 4).amax(1) / r2.reshape(3, 4).amax(1))
    torch.testing.assert_close(s[:, 0], expected)


def _float32_tolerance(model: MobileNetV2, x: torch.Tensor) -> float:
    """How far two float32 evaluations of the same maths in another order may drift apart.

    A rotated input runs through the same operations with sums in another order (and the CPU's
    kernels pick their own order: AVX-512 and AVX2 differ). Each sum is rounded at the scale of
    its largest term, and the largest activations inside the net (about 100 here, after CLE and
    HBA) are far above the logits (about 1), so the difference is a few float32 ulps of the
    largest activation, not of the logits: 8 * eps32 * max|activation|. A real break of the
    symmetry moves the logits by orders of magnitude more (the last test here checks that).
    """
    peaks: list[float] = []
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: peaks.append(float(out.abs().max()))) for m in layers
    ]
    try:
        _logits(model, x)
    finally:
        for hook in hooks:
            hook.remove()
    return 8 * torch.finfo(torch.float32).eps * max(peaks)


def _rot90_error(model: MobileNetV2, x: torch.Tensor, k: int) -> float:
    return float((_logits(model, torch.rot90(x, k, dims=(2, 3))) - _logits(model, x)).abs().max())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_invariance_survives_cle_and_hba(equivariant: MobileNetV2, x: torch.Tensor, k: int) -> None:
    folded, stats = _equalized(equivariant)
    dfq.absorb_high_bias(folded, stats)
    assert _rot90_error(equivariant, x, k) < _float32_tolerance(equivariant, x)  # the net itself
    assert _rot90_error(folded, x, k) < _float32_tolerance(folded, x)


def test_the_float32_tolerance_still_catches_a_broken_symmetry(
    equivariant: MobileNetV2, x: torch.Tensor
) -> None:
    folded, stats = _equalized(equivariant)
    dfq.absorb_high_bias(folded, stats)
    tolerance = _float32_tolerance(folded, x)
    assert tolerance < 1e-3  # a few ulps of the activations, not a bound that cannot fail
    broken = copy.deepcopy(folded)
    first = next(m for m in broken.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():  # one channel of a field scaled alone: the field no longer rotates as one
        first.weight[0] *= 1.05
    assert _rot90_error(broken, x, 1) > 10 * tolerance


def test_hba_absorbs_something(plain: MobileNetV2) -> None:
    folded, stats = _equalized(plain)
    absorbed = dfq.absorb_high_bias(folded, stats)
    assert absorbed and max(absorbed.values()) > 0
    n = dfq.field_size(folded)
    for pair in dfq.relu_pairs(folded):  # the BN model moved by exactly what was absorbed
        assert float(dfq.high_bias(stats[pair.first], n).max()) <= 1e-5


def _pair_output(model: MobileNetV2, pair: dfq.Pair, z: torch.Tensor) -> torch.Tensor:
    """The second layer applied to relu(z), z being the first layer's output."""
    h = torch.relu(z)
    with torch.no_grad():
        if pair.second == dfq.CLASSIFIER:
            return model.classifier(model.group_pool(model.pool(h)))
        return dfq.conv_of(model, pair.second)(h)


@pytest.mark.parametrize("kind", ["equivariant", "conventional"])
def test_hba_identity_where_relu_inputs_exceed_the_absorbed_amount(kind: str) -> None:
    """second(relu(z)) == second'(relu(z - c)) whenever z >= c, for every pair with a 1x1 second layer
    (and in the interior for a padded one)."""
    model = tiny_plain(kind)
    before, stats = _equalized(model)
    after = copy.deepcopy(before)
    stats_after = {k: dfq.PreActivation(v.mean.clone(), v.std.clone()) for k, v in stats.items()}
    dfq.absorb_high_bias(after, stats_after)
    gen = torch.Generator().manual_seed(3)
    n = dfq.field_size(before)
    checked = 0
    firsts = {p.first for p in dfq.relu_pairs(before)}
    for pair in dfq.relu_pairs(before):
        c = dfq.high_bias(stats[pair.first], n)
        if not bool((c > 0).any()):
            continue
        conv = dfq.conv_of(before, pair.first)
        size = 13 if pair.second != dfq.CLASSIFIER else before.pool.weight.shape[-1]
        z = torch.randn(2, conv.out_channels, size, size, generator=gen).abs() + c.reshape(1, -1, 1, 1)
        want = _pair_output(before, pair, z)
        got = _pair_output(after, pair, z - c.reshape(1, -1, 1, 1))
        if pair.second in firsts:  # the second layer gave up its own high bias to the next pair
            got = got + dfq.high_bias(stats[pair.second], n).reshape(1, -1, 1, 1)
        if pair.second != dfq.CLASSIFIER and any(dfq.conv_of(before, pair.second).padding):
            want, got = want[..., 1:-1, 1:-1], got[..., 1:-1, 1:-1]
        assert _max_rel(got, want) < 1e-5, pair
        checked += 1
    assert checked >= 3


def test_hba_changes_the_network_little(plain: MobileNetV2, x: torch.Tensor) -> None:
    """HBA is exact only where ReLU inputs stay above c; here ~1% of them do not (the inputs are not
    the BN statistics' distribution), so the logits move a little, less with a wider margin."""
    folded, stats = _equalized(plain)
    before = _logits(folded, x)
    changes = []
    for n_sigma in (3.0, 4.5):
        model = copy.deepcopy(folded)
        dfq.absorb_high_bias(model, {k: dfq.PreActivation(v.mean, v.std) for k, v in stats.items()}, n_sigma)
        changes.append(_max_rel(_logits(model, x), before))
    assert 0 < changes[1] < changes[0] < 0.15


def test_relu_mean_matches_monte_carlo() -> None:
    mean, std = torch.tensor([-1.0, 0.0, 0.5, 3.0]), torch.tensor([0.5, 1.0, 2.0, 0.1])
    samples = mean + std * torch.randn(200_000, 4, generator=torch.Generator().manual_seed(0))
    got = dfq.relu_mean(dfq.PreActivation(mean, std))
    torch.testing.assert_close(got, torch.relu(samples).mean(dim=0), atol=0.01, rtol=0.01)


def test_bias_correction_cancels_expected_error(plain: MobileNetV2) -> None:
    """With inputs equal to their expectation, corrected quantized layers match the FP32 ones."""
    folded, stats = _equalized(plain)
    gen = torch.Generator().manual_seed(5)
    quantized = {
        name: conv.weight.detach() + 0.01 * torch.randn(conv.weight.shape, generator=gen)
        for name, conv in dfq.iter_convs(folded)
    }
    means = dfq.input_means(folded, stats)
    corrected = copy.deepcopy(folded)
    dfq.correct_bias(corrected, stats, quantized)
    for name, conv in dfq.iter_convs(folded):
        ex = means[name].reshape(1, -1, 1, 1).expand(1, conv.in_channels, 9, 9)
        q = copy.deepcopy(dfq.conv_of(corrected, name))
        with torch.no_grad():
            q.weight.copy_(quantized[name])
            want, got = conv(ex), q(ex)
        interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))
        torch.testing.assert_close(got[interior], want[interior], atol=1e-4, rtol=1e-4)


def test_input_means_of_residual_stream(plain: MobileNetV2) -> None:
    folded, stats = dfq.fold_batchnorm(plain)
    means = dfq.input_means(folded, stats)
    assert set(means) == set(dfq.unit_names(folded))
    for name, conv in dfq.iter_convs(folded):
        assert means[name].shape == (conv.in_channels,)
        assert all(math.isfinite(v) for v in means[name].tolist())
