"""Real PCam patches read from the repository's zip (``labels.csv`` inside), checked against sha256.

The mosaic slides (:mod:`scripts.mosaic_slide`) are built from these: each patch is centre-cropped
from PCam's 96 px to the model's 95 px input, pixels unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PCAM_ZIP = "pcam_train_valid.zip"
PCAM_PATCH_PX = 96
CELL_PX = 95
CROP_OFFSET_PX = (PCAM_PATCH_PX - CELL_PX) // 2
PATCH_CACHE = 2048

U8 = npt.NDArray[np.uint8]


class PatchArchive:
    """Labelled PCam patches read from the zip (``labels.csv`` inside), checked against sha256."""

    def __init__(self, zip_path: Path) -> None:
        self.zip_path = Path(zip_path)
        self._zip: zipfile.ZipFile | None = None
        self._cache: OrderedDict[int, U8] = OrderedDict()
        text = self._open().read("labels.csv").decode("utf-8")
        self.rows: dict[int, dict[str, str]] = {
            int(row["source_index"]): row for row in csv.DictReader(io.StringIO(text))
        }

    def _open(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.zip_path)
        return self._zip

    def __getstate__(self) -> dict[str, Any]:
        return {"zip_path": self.zip_path, "_zip": None, "rows": self.rows, "_cache": OrderedDict()}

    def ids(self, splits: Sequence[str], label: int) -> npt.NDArray[np.int64]:
        """Sorted source indices of one label in the given splits."""
        found = [i for i, r in self.rows.items() if r["split"] in splits and int(r["label"]) == label]
        return np.array(sorted(found), dtype=np.int64)

    def patch(self, source_index: int) -> U8:
        """The ``CELL_PX`` square crop of one patch, RGB uint8 (the last few are cached)."""
        if source_index in self._cache:
            self._cache.move_to_end(source_index)
            return self._cache[source_index]
        crop = self._read_patch(source_index)
        self._cache[source_index] = crop
        if len(self._cache) > PATCH_CACHE:
            self._cache.popitem(last=False)
        return crop

    def _read_patch(self, source_index: int) -> U8:
        from PIL import Image

        row = self.rows[source_index]
        data = self._open().read(row["path"])
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise ValueError(f"sha256 mismatch for {row['path']} in {self.zip_path}")
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        if rgb.shape[:2] != (PCAM_PATCH_PX, PCAM_PATCH_PX):
            raise ValueError(f"{row['path']}: expected 96x96, got {rgb.shape[:2]}")
        c = CROP_OFFSET_PX
        return np.ascontiguousarray(rgb[c : c + CELL_PX, c : c + CELL_PX])
