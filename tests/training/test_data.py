"""Readers (zip, PCam h5, Kaggle tif+csv), the decode cache and the seeded splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import Patches, load_patches, read_kaggle, read_source
from training.splits import halve, stratified_subset
from training.train import valid_halves


def test_zip_patches_are_real_and_labelled(small_pcam: dict[str, Patches]) -> None:
    assert set(small_pcam) == {"train", "valid"}
    for patches in small_pcam.values():
        assert patches.images.shape[1:] == (96, 96, 3) and patches.images.dtype == np.uint8
        assert set(np.unique(patches.labels)) == {0, 1}
        assert patches.images.std() > 10  # real tissue, not blank


def test_h5_layout_round_trips(pcam_h5: Path, small_pcam: dict[str, Patches]) -> None:
    data = read_source(pcam_h5)
    assert set(data) == {"train", "valid"}
    for split in data:
        np.testing.assert_array_equal(data[split].images, small_pcam[split].images)
        np.testing.assert_array_equal(data[split].labels, small_pcam[split].labels)


def test_kaggle_layout(shared_data: Path) -> None:
    folder = shared_data / "pcam" / "kaggle_mock"
    data = read_kaggle(folder)
    total = sum(len(p) for p in data.values())
    assert total == 15
    labels = np.concatenate([p.labels for p in data.values()])
    assert (labels == 1).sum() == 5
    assert all(p.images.shape[1:] == (96, 96, 3) for p in data.values())


def test_cache_decodes_once(pcam_h5: Path, tmp_path: Path) -> None:
    first = load_patches(pcam_h5, tmp_path)
    written = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    second = load_patches(pcam_h5, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == written
    assert isinstance(second["train"].images, np.memmap)
    np.testing.assert_array_equal(first["valid"].images, second["valid"].images)


def test_unknown_source_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="h5"):
        read_source(tmp_path)


def test_halves_are_disjoint_stratified_and_keep_duplicates_together() -> None:
    labels = np.repeat([0, 1], 100)
    groups = np.arange(200)
    groups[:10] = 0  # ten identical patches
    groups[150:153] = 150
    a, b = halve(labels, groups, seed=3)
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == 200
    for label in (0, 1):
        assert abs((labels[a] == label).sum() - 50) <= 10
    for g in (0, 150):
        members = np.flatnonzero(groups == g)
        assert np.isin(members, a).all() or np.isin(members, b).all()
    again = halve(labels, groups, seed=3)
    np.testing.assert_array_equal(a, again[0])
    other = halve(labels, groups, seed=4)
    assert not np.array_equal(a, other[0])
    groups[100] = 0  # a copy of group 0's patch labelled tumour: no split keeps the group whole
    with pytest.raises(ValueError, match="different labels"):
        halve(labels, groups, seed=3)


def test_valid_halves_on_real_patches(small_pcam: dict[str, Patches]) -> None:
    select, heldout = valid_halves(small_pcam["valid"], 20200601)
    assert len(select) + len(heldout) == len(small_pcam["valid"])
    select_hashes = {np.asarray(x).tobytes() for x in select.images}
    assert not any(np.asarray(x).tobytes() in select_hashes for x in heldout.images)


def test_stratified_subset() -> None:
    labels = np.array([0] * 70 + [1] * 30)
    idx = stratified_subset(labels, 20, seed=0)
    assert len(idx) == 20 and (labels[idx] == 1).sum() == 6
    assert len(np.unique(idx)) == 20
    np.testing.assert_array_equal(idx, stratified_subset(labels, 20, seed=0))
    assert len(stratified_subset(labels, 1000, seed=0)) == 100
