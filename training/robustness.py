"""What slides do to patches, as fixed, seeded perturbation paths, and the stability measures
``evaluate`` reports: one-pixel shifts, blur, the 40x scanning path and stain changes.

Every path maps raw uint8 patches (PCam's 96 px) to the same number of uint8 patches; the model's
own preprocessing (crop to its input size) follows, exactly as in the engine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from training.augment import hed_jitter, jpeg
from training.field_of_view import PCAM_MPP

Patches = NDArray[np.uint8]
Path_ = Callable[[Patches], Patches]

BLUR_SIZE_PX = 85  # "blur": down to 85 px and back up (a softer scanner or focus)
SCAN_MPP = 0.25  # "40x": a 0.25 µm/px scan of a PCam patch ...
SCAN_ZOOM = PCAM_MPP / SCAN_MPP  # ... 3.888 times its pixels ...
SCAN_JPEG_QUALITY = 80  # ... stored as JPEG tiles ...
SCAN_LEVEL_DOWNSAMPLE = 4  # ... read from the pyramid level 4 times smaller, then resampled
STAIN_GAIN = 0.15  # per-channel gains of up to +-15 %: a crude change of stain between labs
STAIN_SEED = 0


def _each(patches: Patches, fn: Callable[[Image.Image], Image.Image]) -> Patches:
    out = [np.asarray(fn(Image.fromarray(np.ascontiguousarray(p))).convert("RGB")) for p in patches]
    return np.stack(out).astype(np.uint8)


def blur_path(patches: Patches) -> Patches:
    """Down to ``BLUR_SIZE_PX`` with bilinear filtering and back up to the original size."""

    def fn(img: Image.Image) -> Image.Image:
        small = img.resize((BLUR_SIZE_PX, BLUR_SIZE_PX), Image.Resampling.BILINEAR)
        return small.resize(img.size, Image.Resampling.BILINEAR)

    return _each(patches, fn)


def scan_path(patches: Patches) -> Patches:
    """The way a 40x slide reaches the model: bicubic up by ``SCAN_ZOOM`` (the scan), JPEG
    tiles, a pyramid level ``SCAN_LEVEL_DOWNSAMPLE`` times smaller (box filter), then the
    engine's bilinear resampling back to the patch size."""

    def fn(img: Image.Image) -> Image.Image:
        side = round(img.size[0] * SCAN_ZOOM)
        scan = img.resize((side, side), Image.Resampling.BICUBIC)
        tile = Image.fromarray(jpeg(np.asarray(scan), SCAN_JPEG_QUALITY))
        level_side = side // SCAN_LEVEL_DOWNSAMPLE
        level = tile.resize((level_side, level_side), Image.Resampling.BOX)
        return level.resize(img.size, Image.Resampling.BILINEAR)

    return _each(patches, fn)


def gain_path(patches: Patches) -> Patches:
    """Per-patch, per-channel gains drawn from ``1 +- STAIN_GAIN`` (seeded)."""
    rng = np.random.default_rng(STAIN_SEED)
    gains = rng.uniform(1 - STAIN_GAIN, 1 + STAIN_GAIN, size=(len(patches), 1, 1, 3))
    return np.clip(np.rint(patches * gains), 0, 255).astype(np.uint8)


def hed_path(patches: Patches) -> Patches:
    """HED stain jitter of strength 0.1 (seeded): twice the training augmentation's default."""
    return hed_jitter(patches, np.random.default_rng(STAIN_SEED), 0.1, 0.04)


PATHS: dict[str, Path_] = {"blur": blur_path, "scan40x": scan_path, "gain15": gain_path, "hed": hed_path}


def crops(patches: Patches, size_px: int) -> list[Patches]:
    """Every integral ``size_px`` crop position of the patches (4 for 96 -> 95)."""
    _, h, w, _ = patches.shape
    return [
        np.ascontiguousarray(patches[:, y : y + size_px, x : x + size_px])
        for y in range(h - size_px + 1)
        for x in range(w - size_px + 1)
    ]


def shift_stability(probs: list[NDArray[np.float64]], threshold: float = 0.5) -> dict[str, float]:
    """How much a one-pixel move of the field of view changes the answer.

    ``probs[i]`` are the probabilities of crop position ``i`` (``crops`` order, so positions 1..3 are
    one pixel right, down, and diagonal from position 0). Mean, 95th percentile and max |dp| against
    position 0, and the fraction of (patch, move) pairs whose decision at ``threshold`` flips.
    """
    base = probs[0]
    deltas = np.stack([np.abs(p - base) for p in probs[1:]])
    flips = np.stack([(p >= threshold) != (base >= threshold) for p in probs[1:]])
    return {
        "shift_mean_abs_dp": float(deltas.mean()),
        "shift_p95_abs_dp": float(np.quantile(deltas, 0.95)),
        "shift_max_abs_dp": float(deltas.max()),
        "shift_flip_rate": float(flips.mean()),
    }
