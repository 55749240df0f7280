"""Augmentations on uint8 patches, and training's input pipeline against the engine's."""

from __future__ import annotations

import numpy as np
import pytest

from engine.contract import ModelContract
from engine.preprocess import fit_patches, prepare
from training.augment import (
    Augment,
    blur,
    colour_jitter,
    d4,
    hed_jitter,
    jpeg,
    random_d4,
    resample_view,
    rotate,
    seam_composites,
    shifted_pair,
)
from training.batches import channel_stats, make_batch, make_pair_batch
from training.data import Patches


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


def test_default_augment_is_a_square_symmetry_of_the_centre_crop(small_pcam: dict[str, Patches]) -> None:
    raw = np.asarray(small_pcam["train"].images[:8])
    out = Augment().apply(raw, 95, np.random.default_rng(0))
    centre = fit_patches(raw, 95)
    for o, c in zip(out, centre, strict=True):
        assert any(np.array_equal(o, d4(c, e)) for e in range(8))


def test_shift_crops_every_integral_position(small_pcam: dict[str, Patches]) -> None:
    raw = np.repeat(np.asarray(small_pcam["train"].images[:1]), 64, axis=0)
    out = Augment(shift=True).apply(raw, 95, np.random.default_rng(1))
    crops = [raw[0, y : y + 95, x : x + 95] for y in (0, 1) for x in (0, 1)]
    seen = set()
    for o in out:
        hits = [i for i, c in enumerate(crops) if any(np.array_equal(o, d4(c, e)) for e in range(8))]
        assert hits
        seen.update(hits)
    assert seen == {0, 1, 2, 3}


def test_resample_view_zooms_about_the_centre() -> None:
    yy, xx = np.mgrid[0:96, 0:96]
    ramp = np.stack([xx * 2, yy * 2, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    centre = (47.5, 47.5)
    same = resample_view(ramp, 95, centre, 1.0)
    zoomed = resample_view(ramp, 95, centre, 1.15)
    shrunk = resample_view(ramp, 95, centre, 0.85)  # needs more than the patch: mirrored beyond it
    for view in (same, zoomed, shrunk):
        assert view.shape == (95, 95, 3)
        assert abs(int(view[47, 47, 0]) - 95) <= 2  # the centre stays the centre
    span = [int(v[47, -1, 0]) - int(v[47, 0, 0]) for v in (zoomed, same)]
    assert span[0] < span[1]  # magnified: the view covers less of the ramp


def test_hed_jitter_is_the_identity_at_zero_and_a_stain_change_otherwise(patches: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    same = hed_jitter(patches, rng, 0.0, 0.0)
    assert np.abs(same.astype(int) - np.maximum(patches, 1)).max() <= 1  # OD round trip, 0 -> 1
    changed = hed_jitter(patches, rng, 0.1, 0.04)
    diff = np.abs(changed.astype(int) - patches).mean()
    assert changed.dtype == np.uint8 and 0.5 < diff < 40


def test_blur_and_jpeg_degrade_but_keep_the_patch(patches: np.ndarray) -> None:
    p = patches[0]
    for out in (blur(p, 1.0), jpeg(p, 60)):
        assert out.shape == p.shape and out.dtype == np.uint8
        assert 0 < np.abs(out.astype(int) - p).mean() < 40

    # blurring removes high frequencies: neighbouring pixels get closer
    def roughness(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img.astype(int), axis=0)).mean())

    assert roughness(blur(p, 1.0)) < roughness(p)


def test_shifted_pair_crops_two_neighbouring_positions(small_pcam: dict[str, Patches]) -> None:
    raw = np.repeat(np.asarray(small_pcam["train"].images[:1]), 64, axis=0)
    first, second = shifted_pair(raw, 95, np.random.default_rng(2))
    crops = {(y, x): raw[0, y : y + 95, x : x + 95] for y in (0, 1) for x in (0, 1)}

    def where(crop: np.ndarray) -> tuple[int, int]:
        (hit,) = [pos for pos, c in crops.items() if np.array_equal(crop, c)]
        return hit

    moves = {(where(a), where(b)) for a, b in zip(first, second, strict=True)}
    assert all(a != b for a, b in moves)  # always moved, by one pixel: a 96 px view has no room for more
    assert {a for a, _ in moves} == set(crops)  # from every position, in every direction it allows
    assert len(moves) == 12


def test_shifted_pair_moves_by_at_most_a_pixel_in_a_larger_view() -> None:
    views = np.arange(6 * 6, dtype=np.uint8).reshape(1, 6, 6, 1).repeat(200, axis=0)
    first, second = shifted_pair(views, 3, np.random.default_rng(0))
    dy = second[:, 0, 0, 0].astype(int) // 6 - first[:, 0, 0, 0].astype(int) // 6
    dx = second[:, 0, 0, 0].astype(int) % 6 - first[:, 0, 0, 0].astype(int) % 6
    assert set(zip(dy.tolist(), dx.tolist(), strict=True)) == {
        (y, x) for y in (-1, 0, 1) for x in (-1, 0, 1) if (y, x) != (0, 0)
    }
    with pytest.raises(ValueError, match="no room"):
        shifted_pair(views, 6, np.random.default_rng(0))


def test_pair_batch_is_one_augmentation_seen_one_pixel_apart(small_pcam: dict[str, Patches]) -> None:
    raw = np.asarray(small_pcam["train"].images[:8])
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    aug = Augment(shift=True, jitter=3.0)  # gains of +-30 %, offsets of +-0.15: a draw shows
    first, second = make_pair_batch(raw, 95, mean, std, np.random.default_rng(4), aug)
    assert first.shape == second.shape == (8, 3, 95, 95)
    assert not np.array_equal(first.numpy(), second.numpy())
    # the same colour draw reaches both views: their overlap agrees up to the one-pixel move
    inner = slice(40, 55)
    a, b = first.numpy()[:, :, inner, inner], second.numpy()[:, :, inner, inner]
    assert np.abs(a.mean(axis=(2, 3)) - b.mean(axis=(2, 3))).max() < 0.1


def test_full_recipe_is_seeded_and_keeps_shape(small_pcam: dict[str, Patches]) -> None:
    raw = np.asarray(small_pcam["train"].images[:16])
    aug = Augment(shift=True, scale=0.15, blur_p=0.5, jpeg_p=0.5, hed=0.05, jitter=0.5)
    a = aug.apply(raw, 95, np.random.default_rng(3))
    b = aug.apply(raw, 95, np.random.default_rng(3))
    assert a.shape == (16, 95, 95, 3) and np.array_equal(a, b)


def _labelled_pool() -> tuple[np.ndarray, np.ndarray]:
    """Twelve 96 px patches, each one flat value: label 0 in 10..60, label 1 in 160..210."""
    labels = np.array([0, 1] * 6)
    values = np.where(labels == 0, 10, 160) + 10 * np.arange(12) // 2
    images = np.broadcast_to(values[:, None, None, None], (12, 96, 96, 3)).astype(np.uint8)
    return np.ascontiguousarray(images), labels


def test_seam_composites_cut_four_patches_of_the_same_label() -> None:
    images, labels = _labelled_pool()
    out = seam_composites(images, labels, images, labels, 1.0, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    for tile, label in zip(out, labels, strict=True):
        quarters = [tile[:48, :48], tile[:48, 48:], tile[48:, :48], tile[48:, 48:]]
        assert all(len(np.unique(q)) == 1 for q in quarters)  # each quarter is one patch's corner
        values = {int(q[0, 0, 0]) for q in quarters}
        assert values <= set(images[labels == label, 0, 0, 0].tolist())  # never the other label


def test_seam_composites_are_off_at_zero_and_draw_nothing() -> None:
    images, labels = _labelled_pool()
    rng = np.random.default_rng(3)
    before = rng.bit_generator.state
    assert seam_composites(images, labels, images, labels, 0.0, rng) is images
    assert rng.bit_generator.state == before  # runs without seams keep their random stream


def test_seam_composites_replace_about_p_of_the_patches() -> None:
    images, labels = _labelled_pool()
    many, many_labels = np.repeat(images, 50, axis=0), np.repeat(labels, 50)
    out = seam_composites(many, many_labels, images, labels, 0.3, np.random.default_rng(1))
    changed = np.mean([len(np.unique(t)) > 1 for t in out])  # a composite of one patch is rare
    assert 0.2 < changed < 0.35  # 600 draws: 0.3 less the composites that drew one patch four times
