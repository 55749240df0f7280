from __future__ import annotations

import numpy as np
import pytest

from engine.regions import cell_rings, find_regions, label_components, regions_geojson, signed_area
from engine.tiling import plan_grid


def grid_of(rows: list[str]) -> np.ndarray:
    return np.array([[ch == "#" for ch in row] for row in rows])


def test_components_are_four_connected() -> None:
    labels, n = label_components(grid_of(["#..", ".#.", ".##"]))
    assert n == 2
    assert labels[1, 1] == labels[2, 2] != labels[0, 0]


def test_single_cell_outline() -> None:
    (ring,) = cell_rings(grid_of(["#"]))
    assert sorted(ring) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert signed_area(ring) == 1


def test_l_shape_outline_has_six_corners_and_its_area() -> None:
    (ring,) = cell_rings(grid_of(["#.", "##"]))
    assert len(ring) == 6
    assert signed_area(ring) == 3


def test_ring_with_a_hole() -> None:
    rings = cell_rings(grid_of(["###", "#.#", "###"]))
    areas = sorted(signed_area(r) for r in rings)
    assert areas == [-1, 9]  # exterior positive, hole negative: 9 - 1 = 8 cells


def test_diagonal_pinch_does_not_cross() -> None:
    cells = grid_of(["###.", "#.#.", "####", "..##"])
    rings = cell_rings(cells)
    assert sum(signed_area(r) for r in rings) == cells.sum()
    for ring in rings:
        assert len(set(ring)) == len(ring)


def test_regions_are_sorted_and_measured() -> None:
    grid = plan_grid((950, 950), slide_mpp=0.5, model_mpp=0.5, input_px=95)
    probs = np.full((10, 10), 0.1, dtype=np.float32)
    probs[1:3, 1:3] = 0.7  # 4 cells
    probs[6, 6:9] = [0.6, 0.95, 0.6]  # 3 cells, most suspicious
    probs[9, 0] = np.nan
    regions = find_regions(probs, grid, threshold=0.5, cell_mm2=0.01)
    assert [len(r.cells) for r in regions] == [3, 4]
    assert regions[0].max_prob == pytest.approx(0.95)
    assert regions[1].area_mm2 == pytest.approx(0.04)
    assert regions[0].l0_bbox == (570.0, 570.0, 855.0, 665.0)
    assert regions[0].l0_centroid == pytest.approx((712.5, 617.5))


def test_geojson_has_closed_rings_and_measurements() -> None:
    grid = plan_grid((950, 950), slide_mpp=0.5, model_mpp=0.5, input_px=95)
    probs = np.zeros((10, 10), dtype=np.float32)
    probs[2:5, 2:5] = 0.9
    probs[3, 3] = 0.1
    doc = regions_geojson(find_regions(probs, grid, 0.5, 0.01), "v1")
    assert doc["type"] == "FeatureCollection"
    (feature,) = doc["features"]
    coords = feature["geometry"]["coordinates"]
    assert len(coords) == 2  # exterior and the hole
    for ring in coords:
        assert ring[0] == ring[-1]
    assert [190.0, 190.0] in coords[0] and [475.0, 475.0] in coords[0]
    assert feature["properties"]["measurements"]["tiles"] == 8
    assert feature["properties"]["classification"]["name"] == "Tumor"


def test_a_hole_meeting_the_outside_at_a_corner_is_its_own_ring() -> None:
    cells = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=bool)  # hole and outside share (2, 1)
    rings = sorted(cell_rings(cells), key=lambda r: -abs(signed_area(r)))
    assert [signed_area(r) for r in rings] == [8.0, -1.0]
    assert all(len(set(r)) == len(r) for r in rings)  # simple: no vertex twice
    assert set(rings[0]) & set(rings[1]) == {(2, 1)}  # they touch at that corner only


def test_every_components_rings_are_simple_one_exterior_and_holes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = rng.random((9, 9)) < 0.55
        labels, n = label_components(mask)
        for k in range(1, n + 1):
            rings = cell_rings(labels == k)
            areas = [signed_area(r) for r in rings]
            assert all(len(set(r)) == len(r) for r in rings)
            assert sum(a > 0 for a in areas) == 1  # one outline per 4-connected region
            assert sum(areas) == pytest.approx((labels == k).sum())  # holes subtract
