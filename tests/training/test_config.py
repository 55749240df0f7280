"""The layer plan: odd maps, centred stride-2 sampling, channel rounding, MAC counts."""

from __future__ import annotations

import pytest

from training.config import (
    PAPER_STRIDES,
    ArchConfig,
    build_plan,
    centred_padding,
    conv_output_size,
    make_divisible,
)


@pytest.mark.parametrize("size", [3, 5, 7, 11, 23, 47, 95, 97])
def test_stride2_padding_keeps_odd_and_centred(size: int) -> None:
    pad = centred_padding(size, 3, 2)
    out = conv_output_size(size, 3, 2, pad)
    assert out % 2 == 1
    # the centre output sample reads the centre input pixel
    assert -pad + 1 + 2 * (out - 1) // 2 == (size - 1) // 2


def test_even_map_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        centred_padding(96, 3, 2)


def test_paper_plan_sizes() -> None:
    plan = build_plan(ArchConfig(strides=PAPER_STRIDES))
    assert plan.stem.size_out == 47
    sizes = [b.units[-1].size_out for b in plan.blocks]
    assert sizes[:3] == [47, 23, 23] and set(sizes[3:]) == {11}
    assert plan.final_size == 11
    all_strides = build_plan(ArchConfig(strides=(True,) * 5))
    assert all_strides.final_size == 3


@pytest.mark.parametrize("order", [4, 8, 12])
@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_channels_are_whole_fields(order: int, width: float) -> None:
    plan = build_plan(ArchConfig(group_order=order, width=width))
    units = [plan.stem, *(u for b in plan.blocks for u in b.units), plan.last]
    assert all(u.out_channels % order == 0 for u in units)
    conventional = build_plan(ArchConfig(arch="conventional", group_order=order, width=width))
    assert conventional == plan


def test_make_divisible_matches_torchvision() -> None:
    assert make_divisible(32 * 0.5, 8) == 16
    assert make_divisible(1280, 8) == 1280
    assert make_divisible(24 * 0.75, 8) == 24
    assert make_divisible(96 * 0.35, 8) == 32


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        ArchConfig(strides=(True, True))
    with pytest.raises(ValueError):
        ArchConfig(arch="resnet")
    with pytest.raises(ValueError):
        ArchConfig(group_order=1)


def test_config_round_trip() -> None:
    cfg = ArchConfig(arch="conventional", width=0.75, strides=(True, False, True, False, True))
    assert ArchConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.strides_text() == "10101"


def test_expansion_sets_the_hidden_channels_of_the_inverted_residuals() -> None:
    plans = {t: build_plan(ArchConfig(group_order=4, width=0.75, expansion=t)) for t in (2, 6)}
    for t, plan in plans.items():
        first, *rest = plan.blocks
        assert len(first.units) == 2  # t = 1 in MobileNetV2's first block: no expansion conv
        for block in rest:
            expand, depthwise, project = block.units
            assert expand.out_channels == depthwise.out_channels == t * expand.in_channels
            assert project.in_channels == depthwise.out_channels
    with pytest.raises(ValueError):
        ArchConfig(expansion=0)
    old = ArchConfig().to_dict()
    del old["expansion"]  # a checkpoint from before the option gets MobileNetV2's ratio
    assert ArchConfig.from_dict(old).expansion == 6
