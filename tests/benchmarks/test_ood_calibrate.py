"""The out-of-distribution limit sits between the in- and out-of-distribution slides."""

from __future__ import annotations

import pytest

from benchmarks.ood_calibrate import choose_far_fraction


def test_the_limit_is_the_geometric_mean_of_the_gap() -> None:
    # the shipped model's slides: demo and two mosaics against CMU-1 and the TCGA slide
    chosen = choose_far_fraction([0.021, 0.058, 0.044], [0.141, 0.54, 0.56], 0.1, "colour")
    assert chosen == pytest.approx(0.09)


@pytest.mark.parametrize(("inside", "outside"), [(0.0581, 0.0584), (0.0, 0.0005), (0.0, 0.2)])
def test_the_limit_always_splits_the_slides(inside: float, outside: float) -> None:
    """A slide is flagged above the limit; rounding to 3 decimals used to put 0.058 under an
    in-distribution 0.0581, and a floor of 0.001 let an out-of-distribution 0.0005 pass."""
    chosen = choose_far_fraction([inside], [outside], 0.1, "colour")
    assert inside <= chosen < outside


def test_slides_that_overlap_keep_the_current_limit() -> None:
    assert choose_far_fraction([0.2], [0.1, 0.3], 0.25, "features") == 0.25
