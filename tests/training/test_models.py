"""Both networks: rot90 invariance (equivariant net), odd maps, gradients, equal MACs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from training.batches import channel_stats, make_batch
from training.complexity import count_macs, summarise
from training.config import PAPER_STRIDES, ArchConfig, ConvSpec, Plan, build_plan, plan_macs
from training.data import Patches
from training.equivariant import EquivariantMobileNetV2, to_plain
from training.layers import BlurPool, binomial_kernel
from training.mobilenet import MobileNetV2

FAST_STRIDES = (True,) * 5


def plan_units(plan: Plan) -> list[ConvSpec]:
    return [plan.stem, *(u for b in plan.blocks for u in b.units), plan.last]


def _batch(small_pcam: dict[str, Patches], n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    train = small_pcam["train"]
    mean, std = channel_stats(train.images, 95)
    return make_batch(train.images[:n], 95, mean, std), torch.from_numpy(train.labels[:n])


def _rot_gap(model: nn.Module, x: torch.Tensor) -> float:
    """Max |logit(rot90^k x) - logit(x)| over k = 1, 2, 3, relative to the largest logit."""
    model.eval()
    with torch.no_grad():
        base = model(x)
        gap = max(float((model(torch.rot90(x, k, dims=(2, 3))) - base).abs().max()) for k in (1, 2, 3))
    return gap / float(base.abs().max())


def _loud_classifier(model: nn.Module) -> None:
    # at init the classifier is ~0; make logits O(1) so a 1e-4 bound is not trivially met
    nn.init.normal_(model.classifier.weight, 0.0, 1.0)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("order", [4, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_rot90_invariance_at_init_and_after_training(
    small_pcam: dict[str, Patches], order: int, seed: int, antialias: bool
) -> None:
    torch.manual_seed(seed)
    cfg = ArchConfig(group_order=order, width=0.25, strides=FAST_STRIDES, antialias=antialias)
    model = EquivariantMobileNetV2(cfg)
    _loud_classifier(model)
    x, y = _batch(small_pcam)
    with torch.no_grad():
        spread = float(model.eval()(x).std(dim=0).max())
    assert spread > 1e-3  # outputs differ 100 times more than the 1e-5 bound below allows
    assert _rot_gap(model, x) < 1e-5
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert _rot_gap(model, x) < 1e-5
    assert _rot_gap(to_plain(model), x) < 1e-5


def test_conventional_net_is_not_invariant(small_pcam: dict[str, Patches]) -> None:
    torch.manual_seed(0)
    model = MobileNetV2(ArchConfig(arch="conventional", width=0.25, strides=FAST_STRIDES))
    _loud_classifier(model)
    x, _ = _batch(small_pcam)
    assert _rot_gap(model, x) > 1e-2  # the invariance check above can fail


@pytest.mark.parametrize("arch", ["conventional", "equivariant"])
def test_every_feature_map_is_odd(arch: str) -> None:
    cfg = ArchConfig(arch=arch, width=0.25, strides=PAPER_STRIDES)
    model = MobileNetV2(cfg) if arch == "conventional" else to_plain(EquivariantMobileNetV2(cfg))
    sizes: list[tuple[int, int]] = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 95, 95))
    assert sizes and all(h == w and h % 2 == 1 for h, w in sizes)
    assert sizes[0] == (47, 47) and sizes[-1] == (11, 11)


@pytest.mark.parametrize("arch", ["conventional", "equivariant"])
def test_every_parameter_gets_a_gradient(small_pcam: dict[str, Patches], arch: str) -> None:
    torch.manual_seed(0)
    cfg = ArchConfig(arch=arch, width=0.25, strides=FAST_STRIDES)
    model = MobileNetV2(cfg) if arch == "conventional" else EquivariantMobileNetV2(cfg)
    x, y = _batch(small_pcam, 16)
    model.train()
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("order", [4, 8, 12])
def test_both_nets_cost_the_same(order: int) -> None:
    conventional = summarise(ArchConfig(arch="conventional", group_order=order, width=0.25))
    equivariant = summarise(ArchConfig(arch="equivariant", group_order=order, width=0.25))
    assert abs(equivariant["macs"] - conventional["macs"]) / conventional["macs"] < 0.01
    assert equivariant["params_exported"] <= conventional["params"]
    # a true depthwise layer: about N times fewer depthwise parameters, not N times more MACs
    ratio = conventional["depthwise_params"] / equivariant["depthwise_params"]
    assert ratio > order


def test_mac_counter_on_known_layer() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=8))
    assert count_macs(net, 5) == 8 * 25 * 27 + 8 * 9 * 9


def test_masked_pool_ignores_corners() -> None:
    model = MobileNetV2(ArchConfig(arch="conventional", width=0.25))
    x = torch.zeros(1, 3, 95, 95)
    x[..., 0, 0] = 100.0  # outside the circular field of view
    with torch.no_grad():
        a = model.eval()(x)
        b = model(torch.zeros_like(x))
    torch.testing.assert_close(a, b)
    assert float(model.input_mask.mask[0, 0, 0, 0]) == 0.0


@pytest.mark.parametrize("blur", [3, 5, 7])
@pytest.mark.parametrize("strides", [PAPER_STRIDES, FAST_STRIDES])
def test_antialiasing_keeps_every_map_size_and_adds_a_blur_per_subsampling(
    strides: tuple[bool, ...], blur: int
) -> None:
    plain, blurred = (
        build_plan(ArchConfig(strides=strides, antialias=aa, blur_kernel=blur)) for aa in (False, True)
    )
    units = [(a, b) for a, b in zip(plan_units(plain), plan_units(blurred), strict=True)]
    assert all(a.size_out == b.size_out for a, b in units)
    strided = [b for a, b in units if a.stride == 2]
    assert len(strided) == sum(strides)
    assert all(b.stride == 1 and b.blur_padding is not None and b.size_conv == b.size_in for b in strided)
    assert all(b.blur_padding is None for a, b in units if a.stride == 1)
    assert all(b.blur_kernel == blur for b in strided)
    arch = ArchConfig(arch="conventional", width=0.25, strides=strides, antialias=True, blur_kernel=blur)
    model = MobileNetV2(arch)
    assert count_macs(model, 95) == plan_macs(build_plan(model.cfg), 2, 1)
    blurs = [m for m in model.modules() if isinstance(m, BlurPool)]
    assert len(blurs) == sum(strides)
    assert all(m.kernel.shape[-2:] == (blur, blur) for m in blurs)


@pytest.mark.parametrize("size", [3, 5, 7])
def test_blur_kernel_is_a_normalised_square_symmetric_low_pass(size: int) -> None:
    k = binomial_kernel(size)
    if size == 3:
        torch.testing.assert_close(k, torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16)
    assert k.shape == (size, size) and float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(k[size // 2, size // 2]) == float(k.max())  # peaked at the centre
    for turn in (1, 2, 3):
        assert torch.equal(torch.rot90(k, turn), k)
    assert torch.equal(k.flip(0), k)


def test_blur_kernel_size_is_checked() -> None:
    with pytest.raises(ValueError, match="blur kernel"):
        ArchConfig(antialias=True, blur_kernel=4)


@pytest.mark.parametrize("blur", [3, 5])
def test_antialiased_net_exports_exactly(small_pcam: dict[str, Patches], blur: int) -> None:
    torch.manual_seed(0)
    model = EquivariantMobileNetV2(ArchConfig(width=0.25, antialias=True, blur_kernel=blur))
    _loud_classifier(model)
    x, y = _batch(small_pcam)
    model.train()
    F.cross_entropy(model(x), y).backward()  # batch statistics move off their initial values
    with torch.no_grad():
        torch.testing.assert_close(to_plain(model)(x), model.eval()(x), rtol=0, atol=1e-5)
    assert _rot_gap(model, x) < 1e-5  # the larger blur keeps rot90 exact too


def test_features_are_what_the_classifier_reads(small_pcam: dict[str, Patches]) -> None:
    model = MobileNetV2(ArchConfig(width=0.25), pool_order=8).eval()
    x, _ = _batch(small_pcam)
    with torch.no_grad():
        logits, features = model.logits_and_features(x)
        assert features.shape == (len(x), model.classifier.in_features)
        torch.testing.assert_close(model.classifier(features), logits)
        torch.testing.assert_close(model(x), logits)


def test_a_lower_expansion_keeps_rot90_invariance_through_export(small_pcam: dict[str, Patches]) -> None:
    torch.manual_seed(0)
    cfg = ArchConfig(group_order=4, width=0.25, strides=FAST_STRIDES, antialias=True, expansion=2)
    model = EquivariantMobileNetV2(cfg)
    _loud_classifier(model)
    x, _ = _batch(small_pcam)
    assert _rot_gap(model, x) < 1e-5
    assert _rot_gap(to_plain(model), x) < 1e-5
    assert plan_macs(build_plan(cfg), 2, 4) < plan_macs(build_plan(replace(cfg, expansion=6)), 2, 4)
