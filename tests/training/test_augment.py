"""Augmentations on uint8 patches, and training's input pipeline against the engine's."""

from __future__ import annotations

import numpy as np
import pytest

from engine.contract import ModelContract
from engine.preprocess import fit_patches, prepare
from training.augment import colour_jitter, d4, random_d4, rotate
from training.data import Patches
from training.train import channel_stats, make_batch


@pytest.fixture(scope="module")
def patches(small_pcam: dict[str, Patches]) -> np.ndarray:
    return fit_patches(np.asarray(small_pcam["train"].images[:16]), 95)


def test_d4_is_the_square_group(patches: np.ndarray) -> None:
    p = patches[0]
    images = {d4(p, e).tobytes() for e in range(8)}
    assert len(images) == 8  # eight distinct images of a real patch
    assert np.array_equal(d4(d4(p, 1), 3), p)
    assert np.array_equal(d4(d4(p, 5), 5), p)  # reflections are involutions


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotate_by_right_angles_is_exact(patches: np.ndarray, k: int) -> None:
    assert np.array_equal(rotate(patches[0], 90.0 * k), np.rot90(patches[0], k, axes=(0, 1)))


def test_small_rotation_changes_pixels(patches: np.ndarray) -> None:
    out = rotate(patches[0], 10.0)
    assert out.shape == patches[0].shape and not np.array_equal(out, patches[0])


def test_jitter_zero_is_identity_and_nonzero_changes(patches: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    assert np.array_equal(colour_jitter(patches, rng, 0.0), patches)
    out = colour_jitter(patches, rng, 1.0)
    assert out.dtype == np.uint8 and 0 < np.abs(out.astype(int) - patches).mean() < 30


def test_random_d4_is_seeded(patches: np.ndarray) -> None:
    a = random_d4(patches, np.random.default_rng(5))
    b = random_d4(patches, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_training_input_equals_engine_prepare(small_pcam: dict[str, Patches]) -> None:
    raw = np.asarray(small_pcam["valid"].images[:8])  # 96 px, as PCam ships them
    mean, std = channel_stats(small_pcam["train"].images, 95)
    contract = ModelContract(
        input_size=95,
        mpp=0.972,
        mean=mean,
        std=std,
        mask_radius=47.5,
        classes=("normal", "tumour"),
        positive_class="tumour",
        model_version="test",
    )
    np.testing.assert_array_equal(make_batch(raw, 95, mean, std).numpy(), prepare(raw, contract))


def test_channel_stats_are_plausible(small_pcam: dict[str, Patches]) -> None:
    mean, std = channel_stats(small_pcam["train"].images, 95)
    assert all(0.3 < m < 0.9 for m in mean) and all(0.05 < s < 0.4 for s in std)
