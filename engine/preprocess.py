"""Patch preprocessing shared by training and the engine: crop/resize, normalise, circular mask.

This is the single definition of the circular field of view. ``training`` imports it so that the
network is trained on exactly what the engine feeds it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.contract import ModelContract


@lru_cache(maxsize=8)
def _mask_cached(size_px: int, radius_px: float) -> NDArray[np.bool_]:
    centre = (size_px - 1) / 2.0
    yy, xx = np.mgrid[0:size_px, 0:size_px]
    mask: NDArray[np.bool_] = (yy - centre) ** 2 + (xx - centre) ** 2 <= radius_px**2
    mask.setflags(write=False)
    return mask


def circular_mask(size_px: int, radius_px: float) -> NDArray[np.bool_]:
    """Boolean disc of ``radius_px`` around the centre of a ``size_px`` square (pixel centres).

    Distances are measured from the centre pixel, so the disc is invariant to the 8 symmetries of
    the square whatever the radius; this is what keeps 90-degree rotations exact.
    """
    if size_px < 1:
        raise ValueError(f"size_px must be positive, got {size_px}")
    return _mask_cached(int(size_px), float(radius_px))


def fit_patches(patches: NDArray[np.uint8], size_px: int) -> NDArray[np.uint8]:
    """Bring N x H x W x 3 uint8 patches to N x size x size x 3.

    A patch one pixel larger (PCam's 96 for a 95 model) is centre-cropped; equal sizes pass
    through; any other size is resized with a bilinear filter.
    """
    if patches.ndim != 4 or patches.shape[-1] != 3:
        raise ValueError(f"patches must be N x H x W x 3, got shape {patches.shape}")
    n, h, w, _ = patches.shape
    if h == w == size_px:
        return patches
    if h == w and 0 < h - size_px <= 2:
        start = (h - size_px) // 2
        return patches[:, start : start + size_px, start : start + size_px]
    out = np.empty((n, size_px, size_px, 3), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(np.ascontiguousarray(patches[i]))
        out[i] = np.asarray(img.resize((size_px, size_px), Image.Resampling.BILINEAR))
    return out


def normalise(
    patches: NDArray[np.uint8],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    mask: NDArray[np.bool_],
) -> NDArray[np.float32]:
    """uint8 NHWC -> float32 NCHW: ``(x/255 - mean)/std``, zero outside ``mask``."""
    x = patches.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x *= np.asarray(1.0 / np.asarray(std, dtype=np.float64), dtype=np.float32)
    x *= mask[None, :, :, None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def prepare(patches: NDArray[np.uint8], contract: ModelContract) -> NDArray[np.float32]:
    """Everything between RGB patches and the model's input tensor, as training does it."""
    fitted = fit_patches(patches, contract.input_size)
    mask = circular_mask(contract.input_size, contract.mask_radius)
    return normalise(fitted, contract.mean, contract.std, mask)
