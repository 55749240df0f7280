from __future__ import annotations

import numpy as np

from engine.tissue import detect_tissue, otsu_threshold, saturation
from tests.engine.conftest import synthetic_pixels


def test_otsu_splits_two_populations() -> None:
    values = np.concatenate([np.full(1000, 30), np.full(1000, 180)]).astype(np.uint8)
    t = otsu_threshold(values)
    assert 30 <= t < 180


def test_tissue_found_where_it_is() -> None:
    rgb = synthetic_pixels(200, 100, (50, 20, 150, 80))
    mask = detect_tissue(rgb)
    assert mask[20:80, 50:150].mean() > 0.97
    assert mask[:, :45].sum() == 0 and mask[:, 155:].sum() == 0


def test_bare_glass_has_no_tissue() -> None:
    rgb = synthetic_pixels(200, 100, (0, 0, 0, 0))
    assert not detect_tissue(rgb).any()


def test_specks_are_removed() -> None:
    rgb = synthetic_pixels(100, 100, (0, 0, 0, 0))
    rgb[50, 50] = (150, 40, 120)
    assert not detect_tissue(rgb).any()


def test_saturation_is_hsv_saturation_for_every_spread() -> None:
    levels = np.arange(0, 256, 5, dtype=np.uint8)  # 52^3 colours, spreads up to 255
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    hi = rgb.max(axis=2).astype(np.float64)
    lo = rgb.min(axis=2).astype(np.float64)
    expected = np.where(hi > 0, np.floor((hi - lo) * 255 / np.maximum(hi, 1)), 0)
    np.testing.assert_array_equal(saturation(rgb), expected)
    strong = np.array([[[200, 50, 120], [140, 10, 60]]], dtype=np.uint8)  # deep eosin, pen ink
    assert saturation(strong).tolist() == [[191, 236]]
