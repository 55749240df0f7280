"""The centre-only patches of ``benchmarks/centre_evidence.py``."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.centre_evidence import centre_only


@pytest.mark.parametrize("keep", [32, 48, 64])
def test_the_centre_stays_in_place_and_the_edge_is_its_mirror(keep: int) -> None:
    rng = np.random.default_rng(keep)
    patch = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    out = centre_only(patch, keep, 95)
    a = (96 - keep) // 2
    assert out.shape == (95, 95, 3) and out.dtype == np.uint8
    assert np.array_equal(out[a : a + keep, a : a + keep], patch[a : a + keep, a : a + keep])
    # the first row above the centre mirrors the centre's first row; the edge holds nothing else
    assert np.array_equal(out[a - 1, a : a + keep], patch[a, a : a + keep])
    assert set(np.unique(out)) <= set(np.unique(patch[a : a + keep, a : a + keep]))


def test_a_patch_whose_centre_is_one_colour_becomes_that_colour() -> None:
    patch = np.zeros((96, 96, 3), np.uint8)
    patch[24:72, 24:72] = (200, 120, 180)
    assert (centre_only(patch, 48, 95) == np.array([200, 120, 180], np.uint8)).all()
