"""Tissue detection on a thumbnail: Otsu on saturation, with a floor so bare glass stays glass."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

# Saturation (0..255) below which a pixel is glass whatever Otsu says: stained tissue is well
# above it, clean glass, dust and scanner noise are below.
MIN_SATURATION = 20
# Brightness (0..255) below which a pixel is not tissue but pen, folds at their darkest, or the
# black fill outside some scanners' scan area.
MAX_DARKNESS = 25


def otsu_threshold(values: NDArray[np.uint8]) -> int:
    """Otsu's threshold of uint8 values: the cut that maximises between-class variance."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    levels = np.arange(256, dtype=np.float64)
    w0 = hist.cumsum()
    mu0 = (hist * levels).cumsum()
    w1 = total - w0
    mu_t = mu0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu0 * total) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    return int(np.argmax(between))


def saturation(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """HSV saturation scaled to 0..255."""
    c = rgb.astype(np.int32)  # (max - min) * 255 overflows int16 once max - min > 128
    cmax = c.max(axis=2)
    cmin = c.min(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(cmax > 0, (cmax - cmin) * 255 // np.maximum(cmax, 1), 0)
    return s.astype(np.uint8)


def detect_tissue(rgb: NDArray[np.uint8], cleanup_px: int = 3) -> NDArray[np.bool_]:
    """Boolean tissue mask of a thumbnail; ``cleanup_px`` is the opening/closing window (odd)."""
    sat = saturation(rgb)
    threshold = max(otsu_threshold(sat), MIN_SATURATION)
    mask: NDArray[np.bool_] = (sat > threshold) & (rgb.max(axis=2) > MAX_DARKNESS)
    if cleanup_px > 1 and mask.any():
        mask = _open_close(mask, cleanup_px)
    return mask


def _open_close(mask: NDArray[np.bool_], size: int) -> NDArray[np.bool_]:
    """Closing fills pinholes inside tissue; opening then drops isolated specks."""
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    img = img.filter(ImageFilter.MaxFilter(size)).filter(ImageFilter.MinFilter(size))
    img = img.filter(ImageFilter.MinFilter(size)).filter(ImageFilter.MaxFilter(size))
    return np.asarray(img) > 127
