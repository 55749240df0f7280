"""One field of view: the contract, the networks' masks, the batches and the mosaic slides agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.preprocess import circular_mask
from training.config import ArchConfig
from training.export import make_contract
from training.field_of_view import MASK_RADIUS_FRACTION, PCAM_MPP, disc_mask, mask_radius_px
from training.layers import MaskedAvgPool, disc
from training.mobilenet import MobileNetV2


def test_the_numbers() -> None:
    assert PCAM_MPP == 0.972  # PCam: level 2 of 40x CAMELYON16 scans
    assert mask_radius_px(95) == 47.5 == 95 * MASK_RADIUS_FRACTION


@pytest.mark.parametrize("size_px", [95, 47, 11, 1])
def test_every_mask_is_the_engine_disc_of_the_contract_radius(size_px: int) -> None:
    engine = circular_mask(size_px, mask_radius_px(size_px))
    np.testing.assert_array_equal(disc_mask(size_px), engine)
    np.testing.assert_array_equal(disc(size_px).numpy(), engine.astype(np.float32))


def test_contract_and_network_share_the_field_of_view() -> None:
    arch = ArchConfig(arch="conventional", width=0.25, strides=(True,) * 5)
    model = MobileNetV2(arch).eval()
    contract = make_contract(arch, {"mean": (0.5,) * 3, "std": (0.25,) * 3}, model, {})
    assert contract.mpp == PCAM_MPP and contract.mask_radius == mask_radius_px(arch.input_size)
    engine = circular_mask(contract.input_size, contract.mask_radius)
    np.testing.assert_array_equal(model.input_mask.mask[0, 0].numpy(), engine.astype(np.float32))
    pools = [m for m in model.modules() if isinstance(m, MaskedAvgPool)]
    assert pools
    for pool in pools:
        weight = pool.weight[0, 0]
        size = weight.shape[-1]
        expected = torch.from_numpy(disc_mask(size).astype(np.float32))
        torch.testing.assert_close(weight, expected / expected.sum(), rtol=0, atol=0)


def test_mosaic_slides_are_at_pcam_scale() -> None:
    from scripts.mosaic_slide import SlideSpec

    assert SlideSpec.__dataclass_fields__["mosaic_mpp"].default == PCAM_MPP
