"""From tile probabilities to a slide verdict: score, tumour-area estimate, triage category."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from engine.contract import TriagePolicy


@dataclass(frozen=True)
class SlideVerdict:
    """The slide-level answer; ``score`` is None when no tissue was analysed."""

    score: float | None
    category: str
    tiles_analysed: int
    tiles_positive: int
    tumour_area_mm2: float

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def slide_score(probs: NDArray[np.float32], top_k: int) -> float | None:
    """Mean of the ``top_k`` highest tile probabilities (all of them if fewer)."""
    if len(probs) == 0:
        return None
    k = min(top_k, len(probs))
    top = np.partition(probs.astype(np.float64), len(probs) - k)[len(probs) - k :]
    return float(top.mean())


def judge(probs: NDArray[np.float32], policy: TriagePolicy, cell_mm2: float) -> SlideVerdict:
    """Score, category and estimated tumour area (positive tiles x the area each stands for)."""
    score = slide_score(probs, policy.top_k)
    positive = int((probs >= policy.tile_threshold).sum())
    return SlideVerdict(
        score=None if score is None else round(score, 6),
        category=policy.category(score),
        tiles_analysed=len(probs),
        tiles_positive=positive,
        tumour_area_mm2=round(positive * cell_mm2, 4),
    )
