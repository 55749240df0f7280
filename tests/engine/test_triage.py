"""Slide-level triage on synthetic probability grids: pure functions, known answers."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from engine.contract import ModelContract, TriagePolicy
from engine.errors import ContractError
from engine.triage import (
    fit_logistic,
    judge,
    region_stats,
    slide_score,
    smoothed,
    top_k_mean,
)
from tests.onnx_models import make_contract

# float32 probabilities carry about 7 significant digits; scores are compared to 1e-6.
F32_TOL = 1e-6


def scattered(rows: int, cols: int, p_hot: float = 0.99, p_cold: float = 0.1) -> np.ndarray:
    """Tissue everywhere, one hot tile in every 4x4 block: never two hot tiles side by side."""
    g = np.full((rows, cols), p_cold, np.float32)
    g[1::4, 1::4] = p_hot
    return g


def with_blob(grid: np.ndarray, r0: int, c0: int, side: int, p: float = 0.95) -> np.ndarray:
    out = grid.copy()
    out[r0 : r0 + side, c0 : c0 + side] = p
    return out


def test_smoothed_leaves_unanalysed_cells_out_of_the_mean() -> None:
    g = np.array([[1.0, np.nan, 0.0], [np.nan, 0.5, np.nan], [0.0, np.nan, 1.0]], np.float32)
    s = smoothed(g, 3)
    assert math.isnan(s[0, 1])
    assert s[1, 1] == pytest.approx(2.5 / 5, abs=F32_TOL)
    assert s[0, 0] == pytest.approx(1.5 / 2, abs=F32_TOL)
    with pytest.raises(ValueError, match="odd"):
        smoothed(g, 2)


def test_region_stats_measure_each_region() -> None:
    g = np.zeros((6, 6), np.float32)
    g[0:2, 0:2] = 0.8
    g[4, 4] = 0.6
    g[5, 5] = 0.9  # diagonal to (4, 4): a separate 4-connected region
    stats = region_stats(g, 0.5, 3)
    order = np.argsort(-stats.cells)
    assert stats.cells[order].tolist() == [4, 1, 1]
    assert stats.mean_prob[order[0]] == pytest.approx(0.8, abs=F32_TOL)
    assert sorted(stats.mean_prob[order[1:]].tolist()) == pytest.approx([0.6, 0.9], abs=F32_TOL)
    # Within the 2x2 block the best 3x3 mean is at a corner cell: 4 x 0.8 over its 4 neighbours.
    assert stats.smooth_max[order[0]] == pytest.approx(0.8, abs=F32_TOL)


def test_top_k_mean_saturates_with_slide_size_but_the_region_score_does_not() -> None:
    policy = TriagePolicy()
    small, large = scattered(20, 20), scattered(200, 200)
    # The old score: every scattered false positive counts, so both are 0.99.
    assert top_k_mean(small, 10) == pytest.approx(0.99, abs=F32_TOL)
    s_small, s_large = slide_score(small, policy), slide_score(large, policy)
    assert s_small is not None and s_large is not None
    assert s_large == pytest.approx(s_small, abs=F32_TOL)
    assert policy.category(s_large) == "low suspicion"


def test_a_compact_metastasis_outscores_the_same_number_of_scattered_tiles() -> None:
    policy = TriagePolicy()
    background = np.full((60, 60), 0.1, np.float32)
    compact = with_blob(background, 20, 20, 4)  # 16 tiles, 0.37 mm across
    spread = background.copy()
    spread[2::15, 2::15] = 0.95  # 16 tiles, none adjacent
    s_compact, s_spread = slide_score(compact, policy), slide_score(spread, policy)
    assert s_compact is not None and s_spread is not None
    assert s_compact > s_spread
    assert policy.category(s_compact) != "low suspicion"
    assert policy.category(s_spread) == "low suspicion"


@pytest.mark.parametrize("method", ["region_logistic", "region_mass", "largest_region", "smoothed_max"])
def test_every_region_method_ranks_a_blob_above_noise(method: str) -> None:
    policy = TriagePolicy(score_method=method)
    noise = scattered(80, 80, p_hot=0.9)
    a, b = slide_score(with_blob(noise, 30, 30, 6), policy), slide_score(noise, policy)
    assert a is not None and b is not None and a > b


def test_tumour_area_comes_from_the_believed_regions_only() -> None:
    cell_mm2 = 0.0923**2
    grid = scattered(100, 100, p_hot=0.6)
    grid[39:46, 39:46] = 0.1  # keep the scattered tiles off the blob's edge
    grid = with_blob(grid, 40, 40, 5)
    v = judge(grid, TriagePolicy(), cell_mm2)
    assert v.tiles_positive == 25 + 625 - 4  # 4 scattered tiles cleared around the blob
    assert v.tumour_area_mm2 == pytest.approx(25 * cell_mm2, abs=1e-4)
    assert v.largest_region_mm2 == pytest.approx(25 * cell_mm2, abs=1e-4)
    assert v.score_method == "region_logistic"
    legacy = judge(grid, TriagePolicy(score_method="top_k_mean"), cell_mm2)
    assert legacy.tumour_area_mm2 == pytest.approx(v.tiles_positive * cell_mm2, abs=1e-4)


def test_nothing_analysed_is_no_tissue() -> None:
    v = judge(np.full((4, 4), np.nan, np.float32), TriagePolicy(), 0.01)
    assert v.score is None and v.category == "no tissue" and v.tiles_analysed == 0


def test_no_region_scores_the_empty_floor() -> None:
    policy = TriagePolicy()
    s = slide_score(np.full((10, 10), 0.2, np.float32), policy)
    w0, _, _, _ = policy.weights
    assert s == pytest.approx(1 / (1 + math.exp(-w0)), abs=F32_TOL)


def test_fit_logistic_recovers_known_weights() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20000, 1))
    y = (rng.random(20000) < 1 / (1 + np.exp(-(-1.0 + 2.0 * x[:, 0])))).astype(np.float64)
    w = fit_logistic(x, y, l2=0.0)
    # Standard errors at n = 20,000 are about 0.02 (intercept) and 0.03 (slope): 5 sigma.
    assert w[0] == pytest.approx(-1.0, abs=0.1)
    assert w[1] == pytest.approx(2.0, abs=0.15)


def test_old_contracts_get_the_default_policy_and_new_fields_round_trip() -> None:
    contract = make_contract()
    data = json.loads(contract.to_json())
    data["triage"] = {"tile_threshold": 0.5, "top_k": 10, "high_threshold": 0.9, "low_threshold": 0.5}
    assert ModelContract.from_json(json.dumps(data)).triage == TriagePolicy()
    custom = TriagePolicy(score_method="region_mass", weights=(1.0, 2.0, 3.0, 4.0), calibration="x")
    again = ModelContract.from_json(dataclasses.replace(contract, triage=custom).to_json())
    assert again.triage == custom


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (TriagePolicy(score_method="max"), "score_method"),
        (TriagePolicy(smooth_cells=4), "smooth_cells"),
        (TriagePolicy(weights=(1.0, 2.0)), "4 weights"),
    ],
)
def test_bad_policies_are_refused(policy: TriagePolicy, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        dataclasses.replace(make_contract(), triage=policy)
