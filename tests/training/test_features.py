"""Feature statistics for out-of-distribution checks: the fit, the distance, the contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.contract import ModelContract
from tests.onnx_models import make_contract
from training.features import FEATURES_NAME, fit_feature_stats


def _features(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.1, 40)
    return rng.normal(size=(n, 40)) * scales + 5.0


def test_distance_is_about_one_in_distribution_and_large_outside() -> None:
    stats = fit_feature_stats(_features(2000, 0), n_components=8)
    assert len(stats.variances) == 8 and len(stats.components[0]) == 40
    inside = stats.distance(_features(500, 1))
    assert 0.8 < float(np.median(inside)) < 1.2
    # shifted by 10 in every direction: about 7 typical (isotropic residual) standard deviations
    outside = stats.distance(_features(500, 2) + 10.0)
    assert float(np.median(outside)) > 5 * float(np.median(inside))


def test_components_are_orthonormal_and_variances_ordered() -> None:
    stats = fit_feature_stats(_features(1000, 0), n_components=6)
    comps = np.asarray(stats.components)
    np.testing.assert_allclose(comps @ comps.T, np.eye(6), atol=1e-5)
    assert list(stats.variances) == sorted(stats.variances, reverse=True)


def test_contract_round_trip_with_feature_stats() -> None:
    stats = fit_feature_stats(_features(200, 0), n_components=4)
    contract = make_contract(features_name=FEATURES_NAME, feature_stats=stats)
    again = ModelContract.from_json(contract.to_json())
    assert again.feature_stats == stats and again.features_name == FEATURES_NAME
    x = _features(5, 3)
    np.testing.assert_allclose(again.feature_stats.distance(x), stats.distance(x))


def test_contract_refuses_inconsistent_feature_stats() -> None:
    stats = fit_feature_stats(_features(200, 0), n_components=4)
    with pytest.raises(Exception, match="features_name"):
        make_contract(feature_stats=stats)
    bad = dataclasses.replace(stats, variances=(*stats.variances[:3], 0.0))
    with pytest.raises(Exception, match="positive"):
        make_contract(features_name=FEATURES_NAME, feature_stats=bad)
