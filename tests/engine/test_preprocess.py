from __future__ import annotations

import numpy as np
import pytest

from engine.preprocess import circular_mask, fit_patches, normalise, prepare
from tests.onnx_models import make_contract


@pytest.mark.parametrize("size", [9, 95, 96])
@pytest.mark.parametrize("radius", [3.0, 4.5, 47.5, 30.2])
def test_mask_is_invariant_to_the_symmetries_of_the_square(size: int, radius: float) -> None:
    mask = circular_mask(size, radius)
    for k in range(4):
        np.testing.assert_array_equal(np.rot90(mask, k), mask)
    np.testing.assert_array_equal(mask[:, ::-1], mask)
    np.testing.assert_array_equal(mask.T, mask)


def test_mask_is_the_inscribed_disc() -> None:
    mask = circular_mask(95, 47.5)
    assert mask[47, 0] and mask[0, 47] and mask[47, 47]
    assert not mask[0, 0] and not mask[94, 94]
    # Area close to pi r^2.
    assert abs(mask.sum() - np.pi * 47.5**2) / (np.pi * 47.5**2) < 0.01


def test_mask_cannot_be_modified_by_callers() -> None:
    with pytest.raises(ValueError, match="read-only"):
        circular_mask(9, 4.0)[0, 0] = True


def test_pcam_96_is_centre_cropped_to_95_without_resampling() -> None:
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
    out = fit_patches(patches, 95)
    np.testing.assert_array_equal(out, patches[:, 0:95, 0:95])


def test_other_sizes_are_resized() -> None:
    patches = np.full((3, 40, 40, 3), 77, dtype=np.uint8)
    out = fit_patches(patches, 95)
    assert out.shape == (3, 95, 95, 3)
    assert (out == 77).all()


def test_normalise_applies_mean_std_and_zeroes_outside_the_disc() -> None:
    patches = np.full((1, 95, 95, 3), 255, dtype=np.uint8)
    mask = circular_mask(95, 47.5)
    x = normalise(patches, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0), mask)
    assert x.shape == (1, 3, 95, 95) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 47, 47], [2.0, 1.0, 0.5], rtol=1e-6)
    assert (x[0][:, ~mask] == 0).all()


def test_prepare_uses_the_contract() -> None:
    contract = make_contract()
    x = prepare(np.zeros((2, 96, 96, 3), dtype=np.uint8), contract)
    assert x.shape == (2, 3, 95, 95)
    np.testing.assert_allclose(x[0, 0, 47, 47], -2.0)
