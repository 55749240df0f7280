"""From a grid of tile probabilities to a slide verdict: score, triage category, tumour area.

Metastases are contiguous and a tile model's false positives are mostly scattered, so the
slide score is built from *regions* (4-connected cells at or above the tile threshold), not
from the highest tiles anywhere: each region gets a score from a few features (its size, its
mean probability, the highest 3x3-smoothed probability inside it) and the slide score is the
best region's. A slide with more tissue has more scattered false positives, which a top-k mean
sums up; the best region only gains from the rare chance cluster among them, so the score
climbs with slide size far more slowly, but it still climbs (``benchmarks/slide_triage.py``
reports the categories per slide size).

Score methods (``TriagePolicy.score_method``):

- ``region_logistic``: ``sigmoid(w0 + w1 * log(cells) + w2 * mean_prob + w3 * smooth_max)`` of
  the best region; weights fitted on the selection slides by ``benchmarks/slide_triage.py``.
- ``region_mass``: ``1 - 2 ** (-cells * mean_prob / 8)`` of the heaviest region (a region of
  8 certain tiles scores 0.5).
- ``smoothed_max``: the maximum of the 3x3 (``smooth_cells``) mean of the probability map.
- ``largest_region``: ``1 - 2 ** (-cells / 8)`` of the largest region (8 cells: score 0.5).
- ``top_k_mean``: mean of the ``top_k`` highest tile probabilities (the score before issue 16).

All functions are pure and take a ``t_rows x t_cols`` grid with NaN where no tile was analysed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from engine.contract import TriagePolicy
from engine.regions import label_components

FloatGrid = NDArray[np.float32] | NDArray[np.float64]

MASS_HALF = 8.0
"""Region size (tiles, or tiles x mean probability) at which ``region_mass`` and
``largest_region`` scores reach 0.5."""


@dataclass(frozen=True)
class SlideVerdict:
    """The slide-level answer; ``score`` is None when no tissue was analysed."""

    score: float | None
    category: str
    score_method: str
    tiles_analysed: int
    tiles_positive: int
    tumour_area_mm2: float
    largest_region_mm2: float

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class RegionStats:
    """Features of the regions of one grid (arrays, one entry per region, label order)."""

    cells: NDArray[np.int64]
    mean_prob: NDArray[np.float64]
    smooth_max: NDArray[np.float64]
    labels: NDArray[np.int32]


def top_k_mean(probs: NDArray[np.floating], top_k: int) -> float | None:
    """Mean of the ``top_k`` highest probabilities (all of them if fewer); None if empty."""
    p = np.asarray(probs, dtype=np.float64)
    p = p[np.isfinite(p)]
    if len(p) == 0:
        return None
    k = min(top_k, len(p))
    return float(np.partition(p, len(p) - k)[len(p) - k :].mean())


def smoothed(grid: FloatGrid, window: int) -> NDArray[np.float64]:
    """Mean of the analysed cells in each ``window x window`` neighbourhood (NaN: no cell).

    Cells that were not analysed (NaN) are left out of the mean rather than counted as 0, so
    a metastasis at the edge of the tissue is not diluted by glass.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be odd and >= 1, got {window}")
    g = np.asarray(grid, dtype=np.float64)
    valid = np.isfinite(g)
    r = window // 2
    sums = _box_sum(np.where(valid, g, 0.0), r)
    counts = _box_sum(valid.astype(np.float64), r)
    out = np.full(g.shape, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    out[~valid] = np.nan
    return out


def _box_sum(a: NDArray[np.float64], r: int) -> NDArray[np.float64]:
    """Sum over the (2r+1)^2 neighbourhood of every cell, zero beyond the edges."""
    rows, cols = a.shape
    integral = np.zeros((rows + 1, cols + 1))
    integral[1:, 1:] = a.cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(rows) - r, 0, rows)
    y1 = np.clip(np.arange(rows) + r + 1, 0, rows)
    x0 = np.clip(np.arange(cols) - r, 0, cols)
    x1 = np.clip(np.arange(cols) + r + 1, 0, cols)
    out: NDArray[np.float64] = (
        integral[y1[:, None], x1[None, :]]
        - integral[y0[:, None], x1[None, :]]
        - integral[y1[:, None], x0[None, :]]
        + integral[y0[:, None], x0[None, :]]
    )
    return out


def region_stats(grid: FloatGrid, threshold: float, window: int) -> RegionStats:
    """Size, mean probability and highest smoothed probability of every region."""
    g = np.asarray(grid, dtype=np.float64)
    mask = np.nan_to_num(g, nan=0.0) >= threshold
    labels, n = label_components(mask)
    flat = labels.ravel()
    sel = flat > 0
    idx = flat[sel]
    cells = np.bincount(idx, minlength=n + 1)[1:].astype(np.int64)
    sums = np.bincount(idx, weights=g.ravel()[sel], minlength=n + 1)[1:]
    mean = np.divide(sums, np.maximum(cells, 1))
    smooth_max = np.zeros(n)
    if n:
        s = smoothed(g, window).ravel()[sel]
        np.maximum.at(smooth_max, idx - 1, np.nan_to_num(s, nan=0.0))
    return RegionStats(cells=cells, mean_prob=mean, smooth_max=smooth_max, labels=labels)


def or_empty_region(stats: RegionStats) -> RegionStats:
    """``stats``, or for a grid without regions one empty region (one cell of probability 0), so
    that a fitted score still gives such a slide its floor."""
    if len(stats.cells):
        return stats
    return RegionStats(np.ones(1, np.int64), np.zeros(1), np.zeros(1), stats.labels)


def logistic_region_logits(stats: RegionStats, weights: tuple[float, ...]) -> NDArray[np.float64]:
    """``w0 + w1 log(cells) + w2 mean_prob + w3 smooth_max`` per region (the log-odds)."""
    w0, w1, w2, w3 = _four(weights)
    z: NDArray[np.float64] = (
        w0 + w1 * np.log(np.maximum(stats.cells, 1)) + w2 * stats.mean_prob + w3 * stats.smooth_max
    )
    return z


def logistic_region_scores(stats: RegionStats, weights: tuple[float, ...]) -> NDArray[np.float64]:
    """``sigmoid`` of :func:`logistic_region_logits` per region."""
    out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logistic_region_logits(stats, weights)))
    return out


def _four(weights: tuple[float, ...]) -> tuple[float, float, float, float]:
    if len(weights) != 4:
        raise ValueError(f"region_logistic needs 4 weights, got {len(weights)}")
    return weights[0], weights[1], weights[2], weights[3]


def region_scores(stats: RegionStats, policy: TriagePolicy) -> NDArray[np.float64]:
    """Each region's score under ``policy``'s method (the slide score is the highest)."""
    method = policy.score_method
    if method == "region_logistic":
        return logistic_region_scores(stats, policy.weights)
    if method == "largest_region":
        out: NDArray[np.float64] = 1.0 - np.exp2(-stats.cells / MASS_HALF)
        return out
    if method == "region_mass":
        mass: NDArray[np.float64] = 1.0 - np.exp2(-stats.cells * stats.mean_prob / MASS_HALF)
        return mass
    if method == "smoothed_max":
        return stats.smooth_max.astype(np.float64)
    raise ValueError(f"score method {method!r} has no region scores")


def slide_score(grid: FloatGrid, policy: TriagePolicy) -> float | None:
    """The slide score of ``policy.score_method``; None when no tile was analysed."""
    return _score_and_regions(np.asarray(grid, dtype=np.float64), policy)[0]


def _score_and_regions(
    g: NDArray[np.float64], policy: TriagePolicy
) -> tuple[float | None, RegionStats | None, NDArray[np.float64]]:
    if not np.isfinite(g).any():
        return None, None, np.zeros(0)
    method = policy.score_method
    stats = region_stats(g, policy.tile_threshold, policy.smooth_cells)
    if method == "top_k_mean":
        return top_k_mean(g, policy.top_k), stats, np.zeros(len(stats.cells))
    if method == "smoothed_max":
        return float(np.nanmax(smoothed(g, policy.smooth_cells))), stats, region_scores(stats, policy)
    scores = region_scores(stats, policy)
    if len(scores):
        return float(scores.max()), stats, scores
    # No region at all: the score of an empty region (one cell of probability 0).
    floor = float(region_scores(or_empty_region(stats), policy)[0]) if method == "region_logistic" else 0.0
    return floor, stats, scores


def judge(grid: FloatGrid, policy: TriagePolicy, cell_mm2: float) -> SlideVerdict:
    """Score, category, and the tumour area of the regions the score believes.

    The tumour area is the area of the regions whose own score reaches the low threshold (the
    regions that make the slide more than low suspicion), not a count of every positive tile.
    """
    g = np.asarray(grid, dtype=np.float64)
    analysed = int(np.isfinite(g).sum())
    positive = int((np.nan_to_num(g, nan=0.0) >= policy.tile_threshold).sum())
    score, stats, scores = _score_and_regions(g, policy)
    believed_cells = 0
    largest_cells = 0
    if stats is not None and len(stats.cells):
        # top_k_mean has no region scores: every region counts, as before issue 16.
        legacy = policy.score_method == "top_k_mean"
        believed = stats.cells >= 1 if legacy else scores >= policy.low_threshold
        believed_cells = int(stats.cells[believed].sum())
        largest_cells = int(stats.cells[believed].max()) if believed.any() else 0
    return SlideVerdict(
        score=None if score is None else round(score, 6),
        category=policy.category(score),
        score_method=policy.score_method,
        tiles_analysed=analysed,
        tiles_positive=positive,
        tumour_area_mm2=round(believed_cells * cell_mm2, 4),
        largest_region_mm2=round(largest_cells * cell_mm2, 4),
    )


METHOD_TEXT = {
    "region_logistic": "best suspicious region: size, mean and smoothed probability",
    "region_mass": "heaviest suspicious region (tiles x mean probability)",
    "smoothed_max": "highest 3x3-smoothed tile probability",
    "largest_region": "largest suspicious region",
    "top_k_mean": "mean of the top {top_k} tile probabilities",
}


def explain_score(score_method: str, top_k: int) -> str:
    """One line saying how a score was made (a policy's or a summary's ``score_method``; results
    made before slide-level triage read as the top-k mean)."""
    text = METHOD_TEXT.get(score_method, score_method).format(top_k=top_k)
    return f"score = {text}"


def fit_logistic(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    l2: float = 1e-3,
    sample_weight: NDArray[np.float64] | None = None,
    iterations: int = 50,
) -> NDArray[np.float64]:
    """Weights (intercept first) of an L2-regularised, weighted logistic regression (Newton)."""
    sw = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    reg = l2 * np.eye(a.shape[1])
    reg[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (sw * (p - y)) + reg @ w
        hess = (a * (sw * p * (1 - p))[:, None]).T @ a + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return w


def logit(p: float) -> float:
    """log(p / (1 - p)) for 0 < p < 1."""
    return math.log(p / (1 - p))
