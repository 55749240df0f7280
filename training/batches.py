"""uint8 PCam patches -> model input tensors, exactly as the engine prepares them.

Centre crop (``engine.preprocess.fit_patches``), optional per-patch augmentation, normalisation
with the training statistics and the circular mask of :mod:`training.field_of_view`.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from engine.preprocess import fit_patches, normalise
from training import augment
from training.field_of_view import disc_mask


def channel_stats(
    images: NDArray[np.uint8], size_px: int, chunk: int = 2048
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std on the 0..1 scale of the centre-cropped patches."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for start in range(0, len(images), chunk):
        x = fit_patches(np.asarray(images[start : start + chunk]), size_px).astype(np.float64) / 255.0
        total += x.sum(axis=(0, 1, 2))
        total_sq += (x**2).sum(axis=(0, 1, 2))
        count += x.shape[0] * x.shape[1] * x.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return (
        (float(mean[0]), float(mean[1]), float(mean[2])),
        (float(std[0]), float(std[1]), float(std[2])),
    )


def make_batch(
    images: NDArray[np.uint8],
    size_px: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    rng: np.random.Generator | None = None,
    aug: augment.Augment | None = None,
) -> torch.Tensor:
    """uint8 patches -> model input; with ``rng``, ``aug`` (default: D4 only) drawn per patch."""
    if rng is None:
        x = fit_patches(np.asarray(images), size_px)
    else:
        x = (aug or augment.Augment()).apply(np.asarray(images), size_px, rng)
    return torch.from_numpy(normalise(x, mean, std, disc_mask(size_px)))


def make_pair_batch(
    images: NDArray[np.uint8],
    size_px: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    rng: np.random.Generator,
    aug: augment.Augment,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two model inputs per patch, augmented alike and one pixel apart (``augment.shifted_pair``):
    ``aug`` is drawn once per patch on a view one pixel larger than the model's input."""
    views = aug.apply(np.asarray(images), size_px + 1, rng)
    mask = disc_mask(size_px)
    first, second = augment.shifted_pair(views, size_px, rng)
    a = torch.from_numpy(normalise(first, mean, std, mask))
    b = torch.from_numpy(normalise(second, mean, std, mask))
    return a, b
