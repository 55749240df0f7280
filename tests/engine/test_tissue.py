from __future__ import annotations

import numpy as np

from engine.tissue import detect_tissue, otsu_threshold
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
