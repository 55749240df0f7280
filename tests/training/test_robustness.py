"""Perturbation paths and stability measures that ``evaluate`` reports."""

from __future__ import annotations

import numpy as np
import pytest

from training import robustness
from training.data import Patches


@pytest.fixture(scope="module")
def raw(small_pcam: dict[str, Patches]) -> np.ndarray:
    return np.asarray(small_pcam["valid"].images[:6])


@pytest.mark.parametrize("name", sorted(robustness.PATHS))
def test_each_path_changes_pixels_but_not_shape(raw: np.ndarray, name: str) -> None:
    out = robustness.PATHS[name](raw)
    assert out.shape == raw.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - raw).mean()
    assert 0.2 < diff < 40, diff


def test_paths_are_deterministic(raw: np.ndarray) -> None:
    for path in robustness.PATHS.values():
        assert np.array_equal(path(raw), path(raw))


def test_crops_are_the_four_one_pixel_moves(raw: np.ndarray) -> None:
    crops = robustness.crops(raw, 95)
    assert len(crops) == 4 and all(c.shape == (6, 95, 95, 3) for c in crops)
    assert np.array_equal(crops[1][:, :, :94], crops[0][:, :, 1:])  # one pixel to the right
    assert np.array_equal(crops[2][:, :94], crops[0][:, 1:])  # one pixel down


def test_shift_stability_counts_flips_and_deltas() -> None:
    base = np.array([0.1, 0.45, 0.9, 0.6])
    moved = [base, base + np.array([0.0, 0.1, 0.0, 0.0]), base, base - np.array([0.0, 0.0, 0.0, 0.2])]
    out = robustness.shift_stability(moved)
    assert out["shift_flip_rate"] == pytest.approx(2 / 12)
    assert out["shift_max_abs_dp"] == pytest.approx(0.2)
    assert out["shift_mean_abs_dp"] == pytest.approx(0.3 / 12)
    assert robustness.shift_stability([base] * 4)["shift_flip_rate"] == 0.0
