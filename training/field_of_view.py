"""The model's field of view, defined once: PCam's scale and the circular mask's radius.

The engine never imports ``training``: it reads both numbers from the model's contract (``mpp``,
``mask_radius``), which :func:`training.export.make_contract` fills from here. The networks' input
mask and masked pooling (:mod:`training.layers`), the training batches (:mod:`training.batches`),
the robustness paths and the mosaic test slides (``scripts/mosaic_slide.py``) use the same
definitions. The disc itself is drawn by the engine's :func:`engine.preprocess.circular_mask`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.preprocess import circular_mask

PCAM_MPP = 0.972  # µm/px of PCam's patches: level 2 of 40x CAMELYON16 scans
MASK_RADIUS_FRACTION = 0.5  # mask radius / side: the disc inscribed in the square (47.5 px at 95 px)


def mask_radius_px(size_px: int) -> float:
    """Radius of the circular field of view of a ``size_px`` square (input or feature map)."""
    return size_px * MASK_RADIUS_FRACTION


def disc_mask(size_px: int) -> NDArray[np.bool_]:
    """The engine's circular mask of a ``size_px`` square with the radius above (read-only)."""
    return circular_mask(size_px, mask_radius_px(size_px))
