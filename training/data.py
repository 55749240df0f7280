"""Read labelled PCam patches from the repo's JPEG zip, PCam's h5 files or Kaggle's tif + csv.

Every reader returns uint8 N x H x W x 3 arrays and int64 labels per split. Decoded arrays are
cached as ``.npy`` under a cache folder so epochs never decode an image twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

log = logging.getLogger(__name__)

KAGGLE_VALID_FRACTION = 0.1
KAGGLE_SPLIT_SEED = 0


@dataclass(frozen=True)
class Patches:
    """Labelled RGB patches of one split (``images`` may be a read-only memory map)."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be N x H x W x 3, got {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: NDArray[np.int64]) -> Patches:
        """The patches at ``index`` (loaded into memory)."""
        index = np.sort(np.asarray(index, dtype=np.int64))
        return Patches(np.asarray(self.images[index]), self.labels[index])


def _decode(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_zip(path: Path, max_per_split: int | None = None) -> dict[str, Patches]:
    """The repo's PCam zip: JPEG/PNG patches listed in ``labels.csv`` (split,label,...,path).

    ``max_per_split`` keeps only the first rows of each split (for quick tests).
    """
    out: dict[str, tuple[list[NDArray[np.uint8]], list[int]]] = {}
    with zipfile.ZipFile(path) as zf:
        rows = list(csv.DictReader(io.TextIOWrapper(zf.open("labels.csv"), encoding="utf-8")))
        for row in rows:
            images, labels = out.setdefault(row["split"], ([], []))
            if max_per_split is not None and len(labels) >= max_per_split:
                continue
            images.append(_decode(zf.read(row["path"])))
            labels.append(int(row["label"]))
    return {s: Patches(np.stack(x), np.asarray(y, dtype=np.int64)) for s, (x, y) in out.items()}


def read_h5(folder: Path) -> dict[str, Patches]:
    """PCam's own layout: ``*_{split}_x.h5`` (dataset ``x``) with ``*_{split}_y.h5`` (``y``)."""
    import h5py

    out: dict[str, Patches] = {}
    for x_path in sorted(folder.glob("*_x.h5")):
        y_path = x_path.with_name(x_path.name[: -len("_x.h5")] + "_y.h5")
        if not y_path.is_file():
            raise FileNotFoundError(f"{x_path.name} has no matching labels file {y_path.name}")
        split = x_path.name[: -len("_x.h5")].rsplit("_", 1)[-1]
        with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
            images = np.asarray(fx["x"], dtype=np.uint8)
            labels = np.asarray(fy["y"]).reshape(-1).astype(np.int64)
        out[split] = Patches(images, labels)
    if not out:
        raise FileNotFoundError(f"no *_x.h5 files in {folder}")
    return out


def read_kaggle(folder: Path) -> dict[str, Patches]:
    """Kaggle's layout: a csv with ``id,label`` columns and ``<id>.tif`` patches beside it.

    Kaggle has no validation split: a seeded ``KAGGLE_VALID_FRACTION`` of ids becomes ``valid``.
    """
    csvs = sorted(folder.glob("*.csv"))
    if len(csvs) != 1:
        raise FileNotFoundError(f"expected one labels csv in {folder}, found {len(csvs)}")
    with open(csvs[0], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    tifs = {p.stem: p for p in folder.rglob("*.tif")}
    rows = [r for r in rows if r["id"] in tifs]
    if not rows:
        raise FileNotFoundError(f"none of the ids in {csvs[0].name} has a .tif under {folder}")
    rows.sort(key=lambda r: r["id"])
    images = np.stack([_decode(tifs[r["id"]].read_bytes()) for r in rows])
    labels = np.asarray([int(r["label"]) for r in rows], dtype=np.int64)
    rng = np.random.default_rng(KAGGLE_SPLIT_SEED)
    is_valid = rng.random(len(rows)) < KAGGLE_VALID_FRACTION
    return {
        "train": Patches(images[~is_valid], labels[~is_valid]),
        "valid": Patches(images[is_valid], labels[is_valid]),
    }


def read_source(path: Path) -> dict[str, Patches]:
    """Dispatch on the layout of ``path``: a ``.zip``, a folder of h5 files, or a Kaggle folder."""
    if path.is_file() and path.suffix == ".zip":
        return read_zip(path)
    if path.is_dir() and any(path.glob("*_x.h5")):
        return read_h5(path)
    if path.is_dir() and any(path.glob("*.csv")):
        return read_kaggle(path)
    raise FileNotFoundError(
        f"no PCam data at {path}: pass the patch zip, a folder of PCam *_x.h5/*_y.h5 files, "
        "or a Kaggle folder with train_labels.csv and .tif patches"
    )


def _source_key(path: Path) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{path.stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def load_patches(path: Path, cache_dir: Path) -> dict[str, Patches]:
    """All splits of ``path``, decoded once and then memory-mapped from ``cache_dir``."""
    key = _source_key(path)
    index = cache_dir / f"{key}.splits.txt"
    if not index.is_file():
        log.info("decoding %s into %s (once)", path, cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        splits = read_source(path)
        for name, patches in splits.items():
            for suffix, arr in (("x", patches.images), ("y", patches.labels)):
                # Unique temporary names: parallel runs may decode the same source at once.
                tmp = cache_dir / f"{key}.{name}.{suffix}.{os.getpid()}.tmp.npy"
                np.save(tmp, arr)
                tmp.replace(cache_dir / f"{key}.{name}.{suffix}.npy")
        tmp_index = index.with_name(f"{index.name}.{os.getpid()}.tmp")
        tmp_index.write_text("\n".join(sorted(splits)) + "\n")
        tmp_index.replace(index)
    out: dict[str, Patches] = {}
    for name in index.read_text().split():
        images = np.load(cache_dir / f"{key}.{name}.x.npy", mmap_mode="r")
        labels = np.load(cache_dir / f"{key}.{name}.y.npy")
        out[name] = Patches(images, labels)
    log.info("patches: %s", {k: len(v) for k, v in out.items()})
    return out
