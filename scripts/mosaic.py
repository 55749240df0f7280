"""Pure layout maths for patch-mosaic test slides (numpy only, no I/O).

Coordinate planes, as in openslide's ``deepzoom.py``:

- ``t_``   cell grid: one cell holds one 95 px PCam patch (row, col);
- ``src_`` mosaic pixels: the cell grid at the patches' own µm/px (cell ``(r, c)`` spans
  ``src_x`` in ``[c * cell_px, (c + 1) * cell_px)``);
- ``lvl_`` pixels of one pyramid level of the written slide (level 0 included);
- ``tile_`` the 256 px tile grid of one level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

GLASS, NORMAL, TUMOUR = 0, 1, 2
CLASS_NAMES: tuple[str, str, str] = ("glass", "normal", "tumour")

Layout = npt.NDArray[np.int8]
"""``(rows, cols)`` grid of GLASS / NORMAL / TUMOUR."""


@dataclass(frozen=True)
class Blob:
    """An irregular blob on the cell grid: a rotated ellipse whose radius wobbles with angle."""

    t_cy: float
    t_cx: float
    radius_t: float
    aspect: float
    angle_rad: float
    harmonics: tuple[tuple[int, float, float], ...]
    """``(k, amplitude, phase)``: the radius is scaled by ``1 + sum(a * cos(k * theta + phase))``."""


def random_blob(rng: np.random.Generator, t_cy: float, t_cx: float, radius_t: float) -> Blob:
    """A blob of mean radius ``radius_t`` cells at ``(t_cy, t_cx)`` with a random outline."""
    harmonics = tuple(
        (k, float(rng.uniform(0.0, amp)), float(rng.uniform(0.0, 2 * math.pi)))
        for k, amp in ((2, 0.22), (3, 0.14), (4, 0.08), (5, 0.05))
    )
    return Blob(
        t_cy=t_cy,
        t_cx=t_cx,
        radius_t=radius_t,
        aspect=float(rng.uniform(1.0, 1.6)),
        angle_rad=float(rng.uniform(0.0, math.pi)),
        harmonics=harmonics,
    )


def blob_field(blob: Blob, rows: int, cols: int) -> npt.NDArray[np.float64]:
    """``1 - rho / r(theta)`` at every cell centre: > 0 inside the blob, 1 at its centre."""
    t_y, t_x = np.mgrid[0:rows, 0:cols].astype(np.float64) + 0.5
    dy, dx = t_y - blob.t_cy, t_x - blob.t_cx
    cos_a, sin_a = math.cos(blob.angle_rad), math.sin(blob.angle_rad)
    u = (dx * cos_a + dy * sin_a) / math.sqrt(blob.aspect)
    v = (-dx * sin_a + dy * cos_a) * math.sqrt(blob.aspect)
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    wobble = np.ones_like(theta)
    for k, amp, phase in blob.harmonics:
        wobble += amp * np.cos(k * theta + phase)
    field: npt.NDArray[np.float64] = 1.0 - rho / (blob.radius_t * np.maximum(wobble, 0.3))
    return field


def top_n_mask(field: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.bool_]:
    """Exactly ``n`` True cells: those with the highest field (ties broken by row-major order)."""
    if not 0 <= n <= np.count_nonzero(np.isfinite(field)):
        raise ValueError(f"cannot pick {n} cells from {np.isfinite(field).sum()} candidates")
    order = np.argsort(-field, axis=None, kind="stable")
    mask = np.zeros(field.size, dtype=bool)
    mask[order[:n]] = True
    return mask.reshape(field.shape)


def _blob_radii(rng: np.random.Generator, n_cells: int, n_blobs: int) -> list[float]:
    """Radii (cells) of ``n_blobs`` blobs of uneven size whose areas add up to ``n_cells``."""
    weights = rng.uniform(0.6, 1.4, size=n_blobs)
    weights /= weights.sum()
    return [math.sqrt(n_cells * w / math.pi) for w in weights]


def _place_centre(
    rng: np.random.Generator,
    rows: int,
    cols: int,
    inset_t: float,
    others: list[tuple[float, float]],
    tries: int = 8,
) -> tuple[float, float]:
    """A centre at least ``inset_t`` cells from the border (or the grid centre if none fits),
    the farthest from ``others`` of a few random candidates."""
    lo_y, hi_y, lo_x, hi_x = inset_t, rows - inset_t, inset_t, cols - inset_t
    best, best_gap = (rows / 2, cols / 2), -1.0
    for _ in range(tries):
        t_cy = float(rng.uniform(lo_y, hi_y)) if lo_y < hi_y else rows / 2
        t_cx = float(rng.uniform(lo_x, hi_x)) if lo_x < hi_x else cols / 2
        gap = min((math.hypot(t_cy - y, t_cx - x) for y, x in others), default=0.0)
        if gap > best_gap:
            best, best_gap = (t_cy, t_cx), gap
    return best


def border_penalty(rows: int, cols: int, margin_t: int) -> npt.NDArray[np.float64]:
    """0 in the middle, rising to 1 at the margin: bends tissue outlines away from the border."""
    t_y, t_x = np.mgrid[0:rows, 0:cols].astype(np.float64) + 0.5
    gap = np.minimum(np.minimum(t_y, rows - t_y), np.minimum(t_x, cols - t_x)) - margin_t
    falloff_t = max(2.0, 0.12 * min(rows, cols))
    penalty: npt.NDArray[np.float64] = np.clip(1.0 - gap / falloff_t, 0.0, 1.0) ** 2
    return penalty


def make_layout(
    rows: int,
    cols: int,
    n_tissue: int,
    n_tumour: int,
    seed: int,
    n_tissue_blobs: int = 2,
    n_tumour_blobs: int = 2,
    margin_t: int = 1,
) -> Layout:
    """A seeded cell map with exactly ``n_tissue`` tissue cells, ``n_tumour`` of them tumour.

    Tissue is the ``n_tissue`` cells with the highest value of a union of irregular blobs, never
    within ``margin_t`` cells of the border; tumour is the top ``n_tumour`` tissue cells of a
    second union of smaller blobs centred deep inside the tissue.
    """
    interior = (rows - 2 * margin_t) * (cols - 2 * margin_t)
    if not 0 < n_tissue <= interior:
        raise ValueError(f"n_tissue={n_tissue} must be in 1..{interior} for a {rows}x{cols} grid")
    if not 0 <= n_tumour <= n_tissue:
        raise ValueError(f"n_tumour={n_tumour} must be in 0..n_tissue={n_tissue}")
    rng = np.random.default_rng(seed)

    field = np.full((rows, cols), -np.inf)
    centres: list[tuple[float, float]] = []
    for radius_t in _blob_radii(rng, n_tissue, n_tissue_blobs):
        t_cy, t_cx = _place_centre(rng, rows, cols, margin_t + radius_t, centres)
        centres.append((t_cy, t_cx))
        field = np.maximum(field, blob_field(random_blob(rng, t_cy, t_cx, radius_t), rows, cols))
    field += rng.uniform(0.0, 0.04, size=field.shape)  # ragged edges
    field -= border_penalty(rows, cols, margin_t)
    field[:margin_t, :] = field[rows - margin_t :, :] = -np.inf
    field[:, :margin_t] = field[:, cols - margin_t :] = -np.inf
    tissue = top_n_mask(field, n_tissue)

    layout = np.where(tissue, NORMAL, GLASS).astype(np.int8)
    if n_tumour == 0:
        return layout
    # Tumour blobs start at cells in the deeper half of the tissue.
    depth = np.where(tissue, field, -np.inf)
    deep = np.flatnonzero(depth >= np.median(field[tissue]))
    tumour_field = np.full((rows, cols), -np.inf)
    for radius_t in _blob_radii(rng, n_tumour, n_tumour_blobs):
        t_r, t_c = divmod(int(rng.choice(deep)), cols)
        blob = random_blob(rng, t_r + 0.5, t_c + 0.5, radius_t)
        tumour_field = np.maximum(tumour_field, blob_field(blob, rows, cols))
    tumour_field = np.where(tissue, tumour_field + rng.uniform(0.0, 0.04, field.shape), -np.inf)
    layout[top_n_mask(tumour_field, n_tumour)] = TUMOUR
    return layout


def assign_sources(
    layout: Layout,
    normal_ids: npt.NDArray[np.int64],
    tumour_ids: npt.NDArray[np.int64],
    seed: int,
) -> npt.NDArray[np.int64]:
    """Source index of the patch in every cell (``-1`` on glass), drawn with a seeded shuffle.

    Patches are drawn without replacement while the pool lasts, with replacement otherwise.
    """
    rng = np.random.default_rng(seed)
    sources = np.full(layout.shape, -1, dtype=np.int64)
    for cls, pool in ((NORMAL, normal_ids), (TUMOUR, tumour_ids)):
        cells = layout == cls
        n = int(np.count_nonzero(cells))
        if n and pool.size == 0:
            raise ValueError(f"no {CLASS_NAMES[cls]} patches to fill {n} cells")
        if n:
            sources[cells] = rng.choice(pool, size=n, replace=n > pool.size)
    return sources


def grid_for_count(n_tissue: int, tissue_fraction: float, aspect: float) -> tuple[int, int]:
    """``(rows, cols)`` of a grid of about ``n_tissue / tissue_fraction`` cells, ``cols/rows = aspect``."""
    if not 0 < tissue_fraction <= 0.8:
        raise ValueError(f"tissue_fraction={tissue_fraction} must be in (0, 0.8]")
    n_cells = n_tissue / tissue_fraction
    rows = max(3, math.ceil(math.sqrt(n_cells / aspect)))
    cols = max(3, math.ceil(n_cells / rows))
    return rows, cols


def level_sizes(lvl0_w: int, lvl0_h: int, downsamples: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(width, height)`` of each pyramid level, rounded, at least 1 px."""
    return [(max(1, round(lvl0_w / d)), max(1, round(lvl0_h / d))) for d in downsamples]


def tiles_touching_tissue(
    layout: Layout,
    cell_px: int,
    src_per_lvl: tuple[float, float],
    lvl_size: tuple[int, int],
    tile_px: int,
    margin_src_px: float,
) -> npt.NDArray[np.bool_]:
    """``(tile_rows, tile_cols)``: whether a level tile's source footprint (plus margin) meets tissue."""
    lvl_w, lvl_h = lvl_size
    sx, sy = src_per_lvl
    tile_rows, tile_cols = -(-lvl_h // tile_px), -(-lvl_w // tile_px)
    rows, cols = layout.shape
    # Integral image of tissue cells for O(1) "any tissue in this cell rectangle" queries.
    integral = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    integral[1:, 1:] = (layout != GLASS).cumsum(0).cumsum(1)

    def cell_span(n_tiles: int, scale: float, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
        edges = np.arange(n_tiles + 1) * tile_px * scale
        t_lo = np.floor((edges[:-1] - margin_src_px) / cell_px).astype(np.int64)
        t_hi = np.ceil((edges[1:] + margin_src_px) / cell_px).astype(np.int64)
        return np.clip(t_lo, 0, n_cells), np.clip(t_hi, 0, n_cells)

    r0, r1 = cell_span(tile_rows, sy, rows)
    c0, c1 = cell_span(tile_cols, sx, cols)
    total = (
        integral[r1[:, None], c1[None, :]]
        - integral[r0[:, None], c1[None, :]]
        - integral[r1[:, None], c0[None, :]]
        + integral[r0[:, None], c0[None, :]]
    )
    return np.asarray(total > 0)
