"""Metrics against brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import accuracy, auc, bootstrap_ci, nll


def _pairwise_auc(labels: np.ndarray, prob: np.ndarray) -> float:
    pos, neg = prob[labels == 1], prob[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auc_matches_pairwise_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    prob = np.round(rng.random(300) * 0.5 + 0.4 * labels, 1)  # many ties
    assert abs(auc(labels, prob) - _pairwise_auc(labels, prob)) < 1e-12


def test_auc_extremes() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert np.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_accuracy_and_nll() -> None:
    labels = np.array([0, 1, 1, 0])
    prob = np.array([0.2, 0.7, 0.4, 0.5])
    assert accuracy(labels, prob) == 0.5
    expected = -np.mean(np.log([0.8, 0.7, 0.4, 0.5]))
    assert abs(nll(labels, prob) - expected) < 1e-12


def test_bootstrap_interval_brackets_estimate_and_shrinks() -> None:
    rng = np.random.default_rng(1)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, n)
        return labels, np.clip(0.3 * labels + rng.random(n) * 0.7, 0, 1)

    small = bootstrap_ci(*sample(100), auc, n_boot=300)
    large = bootstrap_ci(*sample(3000), auc, n_boot=300)
    for est, low, high in (small, large):
        assert low <= est <= high
    assert (large[2] - large[1]) < (small[2] - small[1]) / 3


def test_operating_point() -> None:
    from training.metrics import operating_point

    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.int64)
    prob = np.array([0.95, 0.6, 0.4, 0.92, 0.1, 0.55, 0.2, 0.0, 0.91, 0.3])
    assert operating_point(labels, prob, 0.5) == {"threshold": 0.5, "sensitivity": 0.75, "specificity": 4 / 6}
    assert operating_point(labels, prob, 0.9) == {"threshold": 0.9, "sensitivity": 0.5, "specificity": 5 / 6}
    assert np.isnan(operating_point(labels[:4], prob[:4], 0.5)["specificity"])


def test_bootstrap_resamples_copies_of_a_patch_together() -> None:
    from training.metrics import auc, bootstrap_ci

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 150)
    prob = np.clip(0.3 * labels + rng.random(150) * 0.7, 0, 1)
    copies = 10  # every patch ten times over: ten times the patches, no more evidence
    many_labels, many_prob = np.repeat(labels, copies), np.repeat(prob, copies)
    groups = np.repeat(np.arange(150), copies)
    naive = bootstrap_ci(many_labels, many_prob, auc, n_boot=300)
    grouped = bootstrap_ci(many_labels, many_prob, auc, n_boot=300, groups=groups)
    single = bootstrap_ci(labels, prob, auc, n_boot=300)
    assert naive[0] == grouped[0] == pytest.approx(single[0])
    width = {name: ci[2] - ci[1] for name, ci in (("naive", naive), ("grouped", grouped), ("single", single))}
    assert width["naive"] < width["single"] / 2  # copies counted as evidence: far too narrow
    assert width["grouped"] == pytest.approx(width["single"], rel=0.35)  # the evidence there is
