"""Seeded, label-stratified index splits; identical patches always land on the same side."""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

VALID_SPLIT_SEED = 20200601


def pixel_groups(images: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Group id per patch; pixel-identical patches share an id."""
    ids: dict[bytes, int] = {}
    out = np.empty(len(images), dtype=np.int64)
    for i in range(len(images)):
        digest = hashlib.blake2b(np.ascontiguousarray(images[i]).tobytes(), digest_size=16).digest()
        out[i] = ids.setdefault(digest, len(ids))
    return out


def halve(
    labels: NDArray[np.int64], groups: NDArray[np.int64], seed: int = VALID_SPLIT_SEED
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split indices into two halves per label (selection, held-out), keeping groups together.

    A group whose copies carry different labels cannot be kept together by a split per label:
    it is refused (ValueError) rather than put in both halves. PCam's ``valid`` has none.
    """
    pairs = np.unique(np.stack([groups, labels], axis=1), axis=0)
    ids, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"{int((counts > 1).sum())} sets of pixel-identical patches carry different labels "
            f"(group {int(ids[counts > 1][0])}, ...): drop or relabel them before splitting"
        )
    rng = np.random.default_rng(seed)
    first: list[int] = []
    second: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        group_ids = np.unique(groups[idx])
        rng.shuffle(group_ids)
        target = len(idx) / 2
        taken = 0
        chosen = set()
        for g in group_ids:
            if taken >= target:
                break
            chosen.add(int(g))
            taken += int(np.sum(groups[idx] == g))
        mask = np.isin(groups[idx], list(chosen))
        first.extend(idx[mask].tolist())
        second.extend(idx[~mask].tolist())
    return np.sort(np.asarray(first, dtype=np.int64)), np.sort(np.asarray(second, dtype=np.int64))


def stratified_subset(labels: NDArray[np.int64], size: int, seed: int) -> NDArray[np.int64]:
    """``size`` indices with the label proportions of ``labels`` (all of them if size >= len)."""
    if size >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    out: list[NDArray[np.int64]] = []
    classes = np.unique(labels)
    remaining = size
    for i, label in enumerate(classes):
        idx = np.flatnonzero(labels == label)
        k = remaining if i == len(classes) - 1 else round(size * len(idx) / len(labels))
        out.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
        remaining -= len(out[-1])
    return np.sort(np.concatenate(out)).astype(np.int64)
