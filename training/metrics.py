"""Classification metrics on tumour probabilities, with percentile bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Metric = Callable[[NDArray[np.int64], NDArray[np.float64]], float]


def accuracy(labels: NDArray[np.int64], prob: NDArray[np.float64]) -> float:
    """Fraction correct at threshold 0.5."""
    return float(np.mean((prob >= 0.5) == (labels == 1)))


def auc(labels: NDArray[np.int64], prob: NDArray[np.float64]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class."""
    pos = labels == 1
    n_pos = int(pos.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(prob, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def nll(labels: NDArray[np.int64], prob: NDArray[np.float64]) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped to [1e-7, 1-1e-7])."""
    p = np.clip(prob, 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(labels == 1, np.log(p), np.log1p(-p))))


METRICS: dict[str, Metric] = {"accuracy": accuracy, "auc": auc, "nll": nll}


def operating_point(
    labels: NDArray[np.int64], prob: NDArray[np.float64], threshold: float
) -> dict[str, float]:
    """Sensitivity and specificity when ``prob >= threshold`` counts as tumour (NaN if a class is absent)."""
    positive = prob >= threshold
    tumour = labels == 1
    n_tumour, n_normal = int(tumour.sum()), int((~tumour).sum())
    return {
        "threshold": threshold,
        "sensitivity": float((positive & tumour).sum() / n_tumour) if n_tumour else float("nan"),
        "specificity": float((~positive & ~tumour).sum() / n_normal) if n_normal else float("nan"),
    }


def bootstrap_ci(
    labels: NDArray[np.int64],
    prob: NDArray[np.float64],
    metric: Metric,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: NDArray[np.int64] | None = None,
) -> tuple[float, float, float]:
    """(estimate, low, high): the metric and its percentile bootstrap interval.

    Patches are resampled one by one, or with ``groups`` (a group id per patch: pixel-identical
    patches share one) group by group, so that copies of one patch are not counted as
    independent evidence and the interval is not too narrow.
    """
    rng = np.random.default_rng(seed)
    members: list[NDArray[np.int64]] = []
    if groups is not None:
        order = np.argsort(groups, kind="stable")
        _, starts = np.unique(groups[order], return_index=True)
        members = np.split(order, starts[1:])
    stats = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, len(members) or len(labels), size=len(members) or len(labels))
        idx = np.concatenate([members[g] for g in drawn]) if members else drawn
        stats[b] = metric(labels[idx], prob[idx])
    alpha = (1 - level) / 2
    low, high = np.nanquantile(stats, [alpha, 1 - alpha])
    return metric(labels, prob), float(low), float(high)
