"""Render a cell layout of real PCam patches into a pyramidal JPEG-tiled TIFF, tile by tile.

The output is a *mosaic* test slide, not a scan. It is a generic tiled TIFF: one top-level
IFD per pyramid level, XResolution/YResolution in pixels per centimetre, which OpenSlide 4
reports as ``openslide.mpp-x`` / ``openslide.mpp-y``. Every level is resampled straight from
the cell mosaic at PCam's µm/px (``PCAM_MPP``), so no level is ever held whole in memory: each
worker renders a band of tile rows, chunk by chunk, and returns the encoded tiles in order. The
PCam patches come from :class:`scripts.pcam_patches.PatchArchive`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scripts.mosaic import CLASS_NAMES, GLASS, Layout, level_sizes, tiles_touching_tissue
from scripts.pcam_patches import CELL_PX, CROP_OFFSET_PX, PCAM_PATCH_PX, PCAM_ZIP, U8, PatchArchive
from training.field_of_view import PCAM_MPP

log = logging.getLogger(__name__)

TILE_PX = 256
BAND_TILE_ROWS = 4
CHUNK_TILE_COLS = 16
GLASS_VARIANTS = 4
SRC_BLOCK_PX = 2048

__all__ = [  # the mosaic slide's API; the PCam patch names are re-exported for its callers
    "CELL_PX",
    "PCAM_ZIP",
    "BandRenderer",
    "PatchArchive",
    "SlideSpec",
    "check_inputs",
    "truth_dict",
    "write_slide",
    "write_truth",
]


@dataclass(frozen=True, eq=False)
class SlideSpec:
    """Everything needed to render the slide; pickled once into every worker."""

    layout: Layout
    sources: npt.NDArray[np.int64]
    lvl0_mpp: float
    downsamples: tuple[int, ...]
    quality: int
    seed: int
    description: str
    glass_rgb: tuple[int, int, int] = (242, 240, 244)
    glass_sigma: float = 1.5
    mosaic_mpp: float = PCAM_MPP
    cell_px: int = CELL_PX
    tile_px: int = TILE_PX
    src_size: tuple[int, int] = field(init=False)
    lvl_sizes: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        rows, cols = self.layout.shape
        src_w, src_h = cols * self.cell_px, rows * self.cell_px
        scale = self.mosaic_mpp / self.lvl0_mpp
        l0 = (round(src_w * scale), round(src_h * scale))
        object.__setattr__(self, "src_size", (src_w, src_h))
        object.__setattr__(self, "lvl_sizes", tuple(level_sizes(*l0, self.downsamples)))

    def src_per_lvl(self, level: int) -> tuple[float, float]:
        """Mosaic pixels per level pixel, along x and y."""
        lvl_w, lvl_h = self.lvl_sizes[level]
        return self.src_size[0] / lvl_w, self.src_size[1] / lvl_h

    def tile_grid(self, level: int) -> tuple[int, int]:
        """``(tile_rows, tile_cols)`` of a level."""
        lvl_w, lvl_h = self.lvl_sizes[level]
        return -(-lvl_h // self.tile_px), -(-lvl_w // self.tile_px)

    def n_bands(self, level: int) -> int:
        return -(-self.tile_grid(level)[0] // BAND_TILE_ROWS)


def check_inputs(data: Path, downsamples: str) -> tuple[Path, tuple[int, ...]]:
    """The PCam zip inside ``data`` and the parsed pyramid downsamples; ValueError says what to fix."""
    zip_path = data / PCAM_ZIP
    if not zip_path.is_file():
        raise ValueError(f"{zip_path} not found; pass --data FOLDER")
    try:
        values = tuple(int(d) for d in downsamples.split(","))
    except ValueError:
        raise ValueError(f"--downsamples must be comma-separated integers, got {downsamples!r}") from None
    if values[0] != 1:
        raise ValueError("--downsamples must start with 1")
    return zip_path, values


def _margin_src_px(src_per_lvl: tuple[float, float]) -> int:
    """Source pixels beyond a box that a bicubic resample can reach."""
    return math.ceil(2 * max(1.0, *src_per_lvl)) + 2


class BandRenderer:
    """Renders and JPEG-encodes bands of tile rows of any level of a :class:`SlideSpec`."""

    def __init__(self, spec: SlideSpec, zip_path: Path) -> None:
        self.spec = spec
        self.archive = PatchArchive(zip_path)
        rng = np.random.default_rng(spec.seed + 7919)
        noise = rng.normal(0.0, spec.glass_sigma, (GLASS_VARIANTS, spec.tile_px, spec.tile_px, 3))
        self.glass_noise = noise.astype(np.float32)
        glass = np.asarray(spec.glass_rgb, np.float32) + self.glass_noise
        self.glass_tiles = np.clip(np.rint(glass), 0, 255).astype(np.uint8)
        self._glass_bytes: dict[int, bytes] = {}
        self._touch = [
            tiles_touching_tissue(
                spec.layout,
                spec.cell_px,
                spec.src_per_lvl(lv),
                spec.lvl_sizes[lv],
                spec.tile_px,
                _margin_src_px(spec.src_per_lvl(lv)),
            )
            for lv in range(len(spec.downsamples))
        ]

    def _encode(self, tile: U8) -> bytes:
        import imagecodecs

        # The same colour handling tifffile declares for compression="jpeg", photometric="rgb":
        # YCbCr, 2x2 chroma subsampling.
        data = imagecodecs.jpeg8_encode(
            tile,
            level=self.spec.quality,
            colorspace="RGB",
            outcolorspace="YCBCR",
            subsampling=(2, 2),
        )
        return bytes(data)

    def _glass_variant(self, tile_row: int, tile_col: int) -> int:
        return (tile_row * 7 + tile_col * 3 + (tile_row * tile_col) % 5) % GLASS_VARIANTS

    def glass_tile_bytes(self, variant: int) -> bytes:
        if variant not in self._glass_bytes:
            self._glass_bytes[variant] = self._encode(self.glass_tiles[variant])
        return self._glass_bytes[variant]

    def render_source(self, src_y0: int, src_y1: int, src_x0: int, src_x1: int) -> tuple[U8, U8]:
        """Mosaic pixels of a window (may reach outside the mosaic) and its glass mask (255)."""
        spec, cell = self.spec, self.spec.cell_px
        rgb = np.empty((src_y1 - src_y0, src_x1 - src_x0, 3), np.uint8)
        rgb[:] = spec.glass_rgb
        mask = np.full(rgb.shape[:2], 255, np.uint8)
        rows, cols = spec.layout.shape
        t_r0, t_r1 = max(0, src_y0 // cell), min(rows, -(-src_y1 // cell))
        t_c0, t_c1 = max(0, src_x0 // cell), min(cols, -(-src_x1 // cell))
        for t_r in range(t_r0, t_r1):
            for t_c in range(t_c0, t_c1):
                if spec.layout[t_r, t_c] == GLASS:
                    continue
                patch = self.archive.patch(int(spec.sources[t_r, t_c]))
                y0, x0 = t_r * cell, t_c * cell
                ya, yb = max(y0, src_y0), min(y0 + cell, src_y1)
                xa, xb = max(x0, src_x0), min(x0 + cell, src_x1)
                rgb[ya - src_y0 : yb - src_y0, xa - src_x0 : xb - src_x0] = patch[
                    ya - y0 : yb - y0, xa - x0 : xb - x0
                ]
                mask[ya - src_y0 : yb - src_y0, xa - src_x0 : xb - src_x0] = 0
        return rgb, mask

    def render_level(
        self, level: int, lvl_y0: int, lvl_y1: int, lvl_x0: int, lvl_x1: int
    ) -> tuple[U8, U8 | None]:
        """Level pixels of a box (glass in flat colour) and its glass weight (255 = glass),
        ``None`` where the box holds no glass. Beyond the level's edge is glass."""
        lvl_w, lvl_h = self.spec.lvl_sizes[level]
        in_y1, in_x1 = min(lvl_y1, lvl_h), min(lvl_x1, lvl_w)
        rgb, mask = self._resample(level, lvl_y0, in_y1, lvl_x0, in_x1)
        if (in_y1, in_x1) == (lvl_y1, lvl_x1):
            return rgb, mask
        full_rgb = np.empty((lvl_y1 - lvl_y0, lvl_x1 - lvl_x0, 3), np.uint8)
        full_rgb[:] = self.spec.glass_rgb
        full_rgb[: rgb.shape[0], : rgb.shape[1]] = rgb
        full_mask = np.full(full_rgb.shape[:2], 255, np.uint8)
        full_mask[: rgb.shape[0], : rgb.shape[1]] = 0 if mask is None else mask
        return full_rgb, full_mask

    def _resample(
        self, level: int, lvl_y0: int, lvl_y1: int, lvl_x0: int, lvl_x1: int
    ) -> tuple[U8, U8 | None]:
        """``render_level`` for a box inside the level: bicubic from the mosaic."""
        from PIL import Image

        sx, sy = self.spec.src_per_lvl(level)
        if sx == 1.0 and sy == 1.0:
            rgb, mask = self.render_source(lvl_y0, lvl_y1, lvl_x0, lvl_x1)
            return rgb, mask if mask.any() else None
        m = _margin_src_px((sx, sy))
        src_y0, src_y1 = math.floor(lvl_y0 * sy) - m, math.ceil(lvl_y1 * sy) + m
        src_x0, src_x1 = math.floor(lvl_x0 * sx) - m, math.ceil(lvl_x1 * sx) + m
        rgb, mask = self.render_source(src_y0, src_y1, src_x0, src_x1)
        size = (lvl_x1 - lvl_x0, lvl_y1 - lvl_y0)
        box = (
            lvl_x0 * sx - src_x0,
            lvl_y0 * sy - src_y0,
            lvl_x1 * sx - src_x0,
            lvl_y1 * sy - src_y0,
        )
        bicubic = Image.Resampling.BICUBIC
        lvl_rgb = np.asarray(Image.fromarray(rgb).resize(size, bicubic, box=box))
        if not mask.any():
            return lvl_rgb, None
        return lvl_rgb, np.asarray(Image.fromarray(mask).resize(size, bicubic, box=box))

    def _add_glass_noise(self, rgb: U8, mask: U8 | None, variant: int) -> U8:
        """One tile with the glass noise added in proportion to its glass weight."""
        if mask is None or not mask.any():
            return np.ascontiguousarray(rgb)
        noisy = rgb.astype(np.float32)
        noisy += mask[..., None].astype(np.float32) * (1 / 255) * self.glass_noise[variant]
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    def _block_tiles(self, level: int) -> tuple[int, int]:
        """``(tile_rows, tile_cols)`` rendered at once: at most ``CHUNK_TILE_COLS`` wide and
        about ``SRC_BLOCK_PX`` mosaic pixels on a side, which bounds memory on every level."""
        sx, sy = self.spec.src_per_lvl(level)
        t = self.spec.tile_px
        rows = max(1, min(BAND_TILE_ROWS, int(SRC_BLOCK_PX // (t * sy))))
        cols = max(1, min(CHUNK_TILE_COLS, int(SRC_BLOCK_PX // (t * sx))))
        return rows, cols

    def encode_band(self, level: int, band: int) -> list[list[bytes]]:
        """Encoded tiles of one band of ``BAND_TILE_ROWS`` tile rows, row-major."""
        tile_rows, tile_cols = self.spec.tile_grid(level)
        touch, t = self._touch[level], self.spec.tile_px
        tr0, tr1 = band * BAND_TILE_ROWS, min(tile_rows, (band + 1) * BAND_TILE_ROWS)
        step_r, step_c = self._block_tiles(level)
        out: list[list[bytes]] = [[] for _ in range(tr0, tr1)]
        for br0 in range(tr0, tr1, step_r):
            br1 = min(tr1, br0 + step_r)
            for bc0 in range(0, tile_cols, step_c):
                bc1 = min(tile_cols, bc0 + step_c)
                block = None
                if touch[br0:br1, bc0:bc1].any():
                    block = self.render_level(level, br0 * t, br1 * t, bc0 * t, bc1 * t)
                for tr in range(br0, br1):
                    for tc in range(bc0, bc1):
                        variant = self._glass_variant(tr, tc)
                        if block is None or not touch[tr, tc]:
                            out[tr - tr0].append(self.glass_tile_bytes(variant))
                            continue
                        ys = slice((tr - br0) * t, (tr - br0 + 1) * t)
                        xs = slice((tc - bc0) * t, (tc - bc0 + 1) * t)
                        mask = None if block[1] is None else block[1][ys, xs]
                        tile = self._add_glass_noise(block[0][ys, xs], mask, variant)
                        out[tr - tr0].append(self._encode(tile))
        return out


_WORKER: BandRenderer | None = None


def _init_worker(spec: SlideSpec, zip_path: Path) -> None:
    global _WORKER
    _WORKER = BandRenderer(spec, zip_path)


def _encode_band_in_worker(level: int, band: int) -> list[list[bytes]]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.encode_band(level, band)


def _bands_in_order(spec: SlideSpec, zip_path: Path, workers: int) -> Iterator[list[list[bytes]]]:
    """Encoded bands of every level in file order, at most ``2 * workers`` in flight."""
    tasks = [(lv, b) for lv in range(len(spec.downsamples)) for b in range(spec.n_bands(lv))]
    if workers <= 1:
        renderer = BandRenderer(spec, zip_path)
        for lv, b in tasks:
            yield renderer.encode_band(lv, b)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(spec, zip_path)) as pool:
        pending: list[Future[list[list[bytes]]]] = []
        todo = iter(tasks)
        for lv, b in todo:
            pending.append(pool.submit(_encode_band_in_worker, lv, b))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.pop(0).result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_encode_band_in_worker, *nxt))
            yield result


def _level_tiles(bands: Iterator[list[list[bytes]]], n_bands: int) -> Iterator[bytes]:
    for _ in range(n_bands):
        for row in next(bands):
            yield from row


def write_slide(
    spec: SlideSpec, zip_path: Path, out_path: Path, workers: int = 1, bigtiff: bool = False
) -> None:
    """Write the pyramid of ``spec`` to ``out_path`` (one tiled JPEG IFD per level)."""
    import tifffile

    out_path.parent.mkdir(parents=True, exist_ok=True)
    bands = _bands_in_order(spec, Path(zip_path), workers)
    with tifffile.TiffWriter(out_path, bigtiff=bigtiff) as tw:
        for lv, (lvl_w, lvl_h) in enumerate(spec.lvl_sizes):
            lvl_mpp = spec.lvl0_mpp * spec.downsamples[lv]
            log.info("level %d: %dx%d px at %.4g um/px", lv, lvl_w, lvl_h, lvl_mpp)
            px_per_cm = 1e4 / lvl_mpp
            tw.write(
                _level_tiles(bands, spec.n_bands(lv)),
                shape=(lvl_h, lvl_w, 3),
                dtype=np.uint8,
                tile=(spec.tile_px, spec.tile_px),
                compression="jpeg",
                photometric="rgb",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if lv == 0 else 1,
                description=spec.description if lv == 0 else None,
                software="EquiTriage scripts/mosaic_slide.py",
                metadata=None,
            )


def truth_dict(spec: SlideSpec, slide_name: str, splits: Sequence[str]) -> dict[str, Any]:
    """JSON-ready ground truth: the cell grid, its geometry and the patch in every cell."""
    rows, cols = spec.layout.shape
    counts = {name: int(np.count_nonzero(spec.layout == i)) for i, name in enumerate(CLASS_NAMES)}
    l0_w, l0_h = spec.lvl_sizes[0]
    return {
        "slide": slide_name,
        "note": spec.description,
        "mosaic_mpp": spec.mosaic_mpp,
        "cell_px": spec.cell_px,
        "lvl0_mpp": spec.lvl0_mpp,
        "lvl0_cell_px": spec.cell_px / spec.src_per_lvl(0)[0],
        "lvl0_size": [l0_w, l0_h],
        "downsamples": list(spec.downsamples),
        "rows": rows,
        "cols": cols,
        "cell_geometry": "cell (r, c) covers level-0 x in [c, c+1) * lvl0_cell_px, "
        "y in [r, r+1) * lvl0_cell_px",
        "source": {
            "zip": PCAM_ZIP,
            "splits": list(splits),
            "crop": f"[{CROP_OFFSET_PX}:{CROP_OFFSET_PX + CELL_PX}] in y and x of each "
            f"{PCAM_PATCH_PX}x{PCAM_PATCH_PX} patch",
        },
        "seed": spec.seed,
        "counts": counts,
        "classes": [[CLASS_NAMES[int(v)] for v in row] for row in spec.layout],
        "source_index": [[None if v < 0 else int(v) for v in row] for row in spec.sources],
    }


def write_truth(truth: dict[str, Any], path: Path) -> None:
    """Write the truth JSON: header fields pretty, one line per grid row."""
    lines = ["{"]
    items = list(truth.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key in ("classes", "source_index"):
            rows = ",\n    ".join(json.dumps(r) for r in value)
            lines.append(f'  "{key}": [\n    {rows}\n  ]{comma}')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
