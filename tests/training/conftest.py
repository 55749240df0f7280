"""Fixtures for the training tests: a few hundred real PCam patches, and a tiny h5 copy of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("e2cnn")

from training.data import Patches, read_zip


@pytest.fixture(scope="session")
def pcam_zip(shared_data: Path) -> Path:
    """The repo's PCam patch zip."""
    path = shared_data / "pcam" / "pcam_train_valid.zip"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def small_pcam(pcam_zip: Path) -> dict[str, Patches]:
    """The first 400 train and 400 valid patches of the zip (real JPEG-decoded pixels)."""
    return read_zip(pcam_zip, max_per_split=400)


@pytest.fixture(scope="session")
def pcam_h5(small_pcam: dict[str, Patches], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in PCam's own h5 layout holding ``small_pcam``."""
    h5py = pytest.importorskip("h5py")
    folder = tmp_path_factory.mktemp("pcam_h5")
    for split, patches in small_pcam.items():
        stem = folder / f"camelyonpatch_level_2_split_{split}"
        with h5py.File(f"{stem}_x.h5", "w") as f:
            f.create_dataset("x", data=patches.images)
        with h5py.File(f"{stem}_y.h5", "w") as f:
            f.create_dataset("y", data=patches.labels.astype(np.uint8).reshape(-1, 1, 1, 1))
    return folder
