"""Real slide files written on the fly: a JPEG-tiled pyramidal TIFF that OpenSlide reads.

Tiles are streamed to tifffile, so a large slide costs little memory; the content is a few
textured tissue tiles and glass, repeated, which is all reading and interrupt tests need.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

TILE = 256


def _tiles(width: int, height: int, seed: int) -> Iterator[NDArray[np.uint8]]:
    rng = np.random.default_rng(seed)
    pink = np.array([200, 120, 170], dtype=np.int16)
    tissue = [
        np.clip(pink + rng.integers(-40, 41, (TILE, TILE, 3)), 0, 255).astype(np.uint8) for _ in range(4)
    ]
    glass = np.full((TILE, TILE, 3), 240, dtype=np.uint8)
    t_cols, t_rows = -(-width // TILE), -(-height // TILE)
    for t_row in range(t_rows):
        for t_col in range(t_cols):
            # A disc of tissue in the middle, glass around it.
            dx, dy = (t_col + 0.5) / t_cols - 0.5, (t_row + 0.5) / t_rows - 0.5
            yield tissue[(t_row * 7 + t_col) % 4] if dx * dx + dy * dy < 0.16 else glass


def write_pyramid_tiff(
    path: Path,
    width: int,
    height: int,
    mpp: float = 0.25,
    downsamples: tuple[int, ...] = (1, 4, 16),
    seed: int = 0,
) -> Path:
    """A generic tiled TIFF pyramid of ``width`` x ``height`` px at ``mpp`` µm/px."""
    import tifffile

    per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for ds in downsamples:
            w, h = max(1, width // ds), max(1, height // ds)
            tif.write(
                _tiles(w, h, seed),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                resolution=(per_cm / ds, per_cm / ds),
                resolutionunit="CENTIMETER",
                metadata=None,
                subfiletype=0 if ds == 1 else 1,
            )
    return path
