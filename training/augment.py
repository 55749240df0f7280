"""Patch augmentation on uint8 RGB arrays (N x S x S x 3), before the engine's normalisation.

Working on uint8 keeps one preprocessing path: augmented patches go through
``engine.preprocess.normalise`` exactly like the patches the engine reads from a slide.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image


def d4(patch: NDArray[np.uint8], element: int) -> NDArray[np.uint8]:
    """Element 0..7 of the square's symmetry group: rot90^(e % 4), then a left-right flip if e >= 4."""
    out = np.rot90(patch, k=element % 4, axes=(0, 1))
    if element >= 4:
        out = out[:, ::-1]
    return out


def random_d4(patches: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """Each patch transformed by a uniformly drawn element of D4."""
    elements = rng.integers(0, 8, size=len(patches))
    return np.stack([d4(p, int(e)) for p, e in zip(patches, elements, strict=True)])


def rotate(patch: NDArray[np.uint8], angle_deg: float) -> NDArray[np.uint8]:
    """Rotate counter-clockwise about the centre pixel with bilinear interpolation (corners black).

    For odd sizes, multiples of 90 degrees match ``np.rot90`` exactly.
    """
    img = Image.fromarray(np.ascontiguousarray(patch))
    out = img.rotate(angle_deg, resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def random_rotate(patches: NDArray[np.uint8], rng: np.random.Generator, max_deg: float) -> NDArray[np.uint8]:
    """Each patch rotated by an angle drawn uniformly from [-max_deg, max_deg]."""
    angles = rng.uniform(-max_deg, max_deg, size=len(patches))
    return np.stack([rotate(p, float(a)) for p, a in zip(patches, angles, strict=True)])


def colour_jitter(patches: NDArray[np.uint8], rng: np.random.Generator, strength: float) -> NDArray[np.uint8]:
    """Stain/colour jitter: per-channel gain and offset, brightness, contrast and saturation.

    ``strength`` scales every perturbation (0 = identity; 1 = gains of +-10%, offsets of +-0.05).
    """
    n = len(patches)
    x = patches.astype(np.float32) / 255.0
    gain = 1.0 + strength * rng.uniform(-0.1, 0.1, size=(n, 1, 1, 3))
    offset = strength * rng.uniform(-0.05, 0.05, size=(n, 1, 1, 3))
    x = x * gain + offset
    grey = x.mean(axis=3, keepdims=True)
    saturation = 1.0 + strength * rng.uniform(-0.2, 0.2, size=(n, 1, 1, 1))
    x = grey + (x - grey) * saturation
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    contrast = 1.0 + strength * rng.uniform(-0.2, 0.2, size=(n, 1, 1, 1))
    x = mean + (x - mean) * contrast
    out: NDArray[np.uint8] = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return out
