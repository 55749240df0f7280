"""Pure tiling maths: the grid of model patches over a slide, pyramid level choice, tissue cover.

Planes: ``l0_`` level-0 pixels, ``lvl_`` pixels of the chosen pyramid level, ``t_`` tile-grid
indices, ``thumb_`` thumbnail pixels. A tile is the model's field of view (``input_px`` at the
model's µm/px); the grid advances by ``stride_px`` model pixels, and each tile stands for the
stride-sized cell centred on it (cells tile the plane without overlap for heatmaps and areas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Reading a level up to this much coarser than the model's resolution is accepted (a 3% upsample
# for 40x scans whose level 1 is 1.0 µm/px against PCam's 0.972) instead of a 4x costlier read.
LEVEL_TOLERANCE = 1.05


@dataclass(frozen=True)
class TileGrid:
    """Where the model's patches lie on a slide, in level-0 pixels."""

    l0_tile_px: float
    l0_stride_px: float
    t_cols: int
    t_rows: int
    input_px: int
    stride_px: int

    @property
    def count(self) -> int:
        return self.t_cols * self.t_rows

    @property
    def l0_cell_offset(self) -> float:
        """Offset from a tile's corner to its stride cell's corner."""
        return (self.l0_tile_px - self.l0_stride_px) / 2

    def l0_boxes(self, t_cols: NDArray[np.int64], t_rows: NDArray[np.int64]) -> NDArray[np.int64]:
        """Integer (x0, y0, w0, h0) of tiles at the given grid indices, one row per tile."""
        side = round(self.l0_tile_px)
        x0 = np.rint(t_cols * self.l0_stride_px).astype(np.int64)
        y0 = np.rint(t_rows * self.l0_stride_px).astype(np.int64)
        size = np.full_like(x0, side)
        return np.stack([x0, y0, size, size], axis=1)

    def cell_mm2(self, model_mpp: float) -> float:
        """Area in mm² that one tile stands for (its stride cell)."""
        return float((self.stride_px * model_mpp / 1000) ** 2)

    def l0_cell_corner(self, t_col: float, t_row: float) -> tuple[float, float]:
        """Level-0 position of grid-cell corner (t_col, t_row); cell (c, r) spans corners c..c+1."""
        off = self.l0_cell_offset
        return off + t_col * self.l0_stride_px, off + t_row * self.l0_stride_px


def plan_grid(
    l0_size: tuple[int, int],
    slide_mpp: float,
    model_mpp: float,
    input_px: int,
    stride_px: int | None = None,
) -> TileGrid:
    """Whole tiles over the slide from its top-left corner; partial tiles at the edges are dropped."""
    if stride_px is None:
        stride_px = input_px
    if stride_px < 1:
        raise ValueError(f"stride must be at least 1 px, got {stride_px}")
    scale = model_mpp / slide_mpp
    l0_tile = input_px * scale
    l0_stride = stride_px * scale
    cols = _fit(l0_size[0], l0_tile, l0_stride)
    rows = _fit(l0_size[1], l0_tile, l0_stride)
    if cols == 0 or rows == 0:
        cols = rows = 0
    return TileGrid(l0_tile, l0_stride, cols, rows, input_px, stride_px)


def _fit(l0_extent: int, l0_tile: float, l0_stride: float) -> int:
    if l0_extent + 1e-6 < l0_tile:
        return 0
    return math.floor((l0_extent - l0_tile) / l0_stride + 1e-9) + 1


def choose_level(level_downsamples: tuple[float, ...], target_downsample: float) -> int:
    """The cheapest level whose resolution is no coarser than the target (with LEVEL_TOLERANCE)."""
    best = 0
    for level, ds in enumerate(level_downsamples):
        if ds <= target_downsample * LEVEL_TOLERANCE:
            best = level
    return best


def lvl_read_size(grid: TileGrid, level_downsample: float) -> int:
    """Side in level pixels to read for one tile at a level of the given downsample."""
    return max(1, round(grid.l0_tile_px / level_downsample))


def tissue_fractions(
    tissue: NDArray[np.bool_], thumb_downsample: float, grid: TileGrid
) -> NDArray[np.float32]:
    """Fraction of tissue under each tile, t_rows x t_cols, from a thumbnail-resolution mask."""
    out = np.zeros((grid.t_rows, grid.t_cols), dtype=np.float32)
    if grid.count == 0:
        return out
    h, w = tissue.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = tissue.astype(np.float64).cumsum(0).cumsum(1)
    cols = np.arange(grid.t_cols)
    rows = np.arange(grid.t_rows)
    x0 = np.clip(np.floor(cols * grid.l0_stride_px / thumb_downsample), 0, w - 1).astype(int)
    x1 = np.clip(np.ceil((cols * grid.l0_stride_px + grid.l0_tile_px) / thumb_downsample), 1, w).astype(int)
    y0 = np.clip(np.floor(rows * grid.l0_stride_px / thumb_downsample), 0, h - 1).astype(int)
    y1 = np.clip(np.ceil((rows * grid.l0_stride_px + grid.l0_tile_px) / thumb_downsample), 1, h).astype(int)
    x1 = np.maximum(x1, x0 + 1)
    y1 = np.maximum(y1, y0 + 1)
    total = (
        integral[y1[:, None], x1[None, :]]
        - integral[y0[:, None], x1[None, :]]
        - integral[y1[:, None], x0[None, :]]
        + integral[y0[:, None], x0[None, :]]
    )
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    out[:] = total / area
    return out
