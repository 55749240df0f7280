"""Engine fixtures: a tiny real ONNX model and synthetic slides with known tissue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.model import Model
from engine.slide import ArraySlide
from tests.onnx_models import write_model

TISSUE_PINK = (200, 120, 170)
GLASS = (240, 240, 238)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "colour.onnx")


@pytest.fixture(scope="session")
def model(model_path: Path) -> Model:
    return Model.load(model_path, threads=1)


def synthetic_pixels(width: int, height: int, tissue_box: tuple[int, int, int, int]) -> NDArray[np.uint8]:
    """Glass with one pink rectangle of tissue (x0, y0, x1, y1), light noise everywhere."""
    rng = np.random.default_rng(0)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = GLASS
    x0, y0, x1, y1 = tissue_box
    pixels[y0:y1, x0:x1] = TISSUE_PINK
    noise = rng.integers(-4, 5, size=pixels.shape)
    noisy: NDArray[np.uint8] = np.clip(pixels.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return noisy


@pytest.fixture()
def tissue_slide() -> ArraySlide:
    """2000 x 1500 px at 0.972 µm/px (one model px per slide px), tissue in the middle."""
    return ArraySlide(synthetic_pixels(2000, 1500, (500, 400, 1500, 1100)), mpp=0.972, name="synthetic")
