from __future__ import annotations

import numpy as np
import pytest

from engine.tiling import LEVEL_TOLERANCE, choose_level, lvl_read_size, plan_grid, tissue_fractions


def test_grid_at_the_models_resolution() -> None:
    # 40x slide (0.25 µm/px), PCam model (95 px at 0.972): a tile covers 369.36 level-0 px.
    grid = plan_grid((3700, 1900), slide_mpp=0.25, model_mpp=0.972, input_px=95)
    assert grid.l0_tile_px == pytest.approx(369.36)
    assert (grid.t_cols, grid.t_rows) == (10, 5)
    boxes = grid.l0_boxes(np.array([0, 9]), np.array([0, 4]))
    assert boxes.tolist() == [[0, 0, 369, 369], [3324, 1477, 369, 369]]
    assert boxes[1, 0] + boxes[1, 2] <= 3700


def test_stride_makes_the_grid_denser_and_cells_centred() -> None:
    grid = plan_grid((950, 950), slide_mpp=0.972, model_mpp=0.972, input_px=95, stride_px=19)
    assert grid.t_cols == (950 - 95) // 19 + 1
    # Each tile stands for the stride cell around its centre.
    x, y = grid.l0_cell_corner(0, 0)
    assert (x, y) == (38.0, 38.0)
    assert x + grid.l0_stride_px / 2 == 95 / 2


def test_slide_smaller_than_a_tile_has_no_grid() -> None:
    grid = plan_grid((94, 5000), slide_mpp=0.972, model_mpp=0.972, input_px=95)
    assert grid.count == 0


@pytest.mark.parametrize(
    ("downsamples", "target", "level"),
    [
        ((1.0, 4.0, 16.0), 3.888, 1),  # 4 <= 3.888 * 1.05: a 3% upsample beats a 4x larger read
        ((1.0, 4.0, 16.0), 3.7, 0),
        ((1.0, 2.0, 4.0, 8.0), 8.5, 3),
        ((1.0,), 3.9, 0),
        ((1.0, 4.0, 16.0), 0.5, 0),
    ],
)
def test_level_choice(downsamples: tuple[float, ...], target: float, level: int) -> None:
    assert choose_level(downsamples, target) == level
    assert downsamples[level] <= target * LEVEL_TOLERANCE or level == 0


def test_read_size_follows_the_level() -> None:
    grid = plan_grid((4000, 4000), slide_mpp=0.25, model_mpp=0.972, input_px=95)
    assert lvl_read_size(grid, 1.0) == 369
    assert lvl_read_size(grid, 4.0) == 92


def test_tissue_fraction_per_tile() -> None:
    grid = plan_grid((400, 200), slide_mpp=1.0, model_mpp=1.0, input_px=99, stride_px=100)
    assert (grid.t_cols, grid.t_rows) == (4, 2)
    tissue = np.zeros((20, 40), dtype=bool)  # thumbnail at downsample 10
    tissue[:, :10] = True  # first column of tiles fully tissue
    tissue[:10, 20:25] = True  # half of tile (row 0, col 2)
    fr = tissue_fractions(tissue, 10.0, grid)
    assert fr.shape == (2, 4)
    np.testing.assert_allclose(fr[:, 0], 1.0)
    np.testing.assert_allclose(fr[0, 2], 0.5)
    assert fr[1, 1] == 0 and fr[1, 3] == 0
