"""The slide-level benchmark's metrics and its replicate slide sets (no model: a synthetic table)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from benchmarks.slide_triage import (
    confident_normals,
    features,
    parse_args,
    set_aside,
    shipped_scores,
    triage_metrics,
    without_stubborn_normals,
)
from benchmarks.triage_slides import VARIANTS, PatchTable, build_set, patch_table
from tests.onnx_models import write_model


def test_triage_metrics_by_hand() -> None:
    kinds = ["negative"] * 4 + ["itc", "micro", "micro", "macro"]
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.05, 0.25, 0.9, 0.95])
    m = triage_metrics(kinds, scores)
    # metastases >= 0.2 mm (0.25, 0.9, 0.95) beat 2, 4 and 4 of the 4 negatives
    assert m["auc_goal"] == pytest.approx(10 / 12)
    # the isolated tumour cells (0.05) beat none
    assert m["auc_all"] == pytest.approx(10 / 16)
    assert (m["auc_itc"], m["auc_micro"], m["auc_macro"]) == pytest.approx((0.0, 0.75, 1.0))
    # the weakest metastasis >= 0.2 mm (0.25) sets the 100% cut: two negatives lie below it
    assert m["goal_100"] == pytest.approx(0.5)
    assert m["micro_100"] == pytest.approx(0.5)
    assert m["macro_100"] == pytest.approx(1.0)
    assert m["itc_100"] == 0.0


@pytest.mark.parametrize("n", [50, 100])
def test_98_percent_sensitivity_lets_2_percent_of_the_positives_fall_below_the_cut(n: int) -> None:
    """It used to keep all 50 of a class (the 100% cut again) and 99 of 100."""
    pos = np.arange(1, n + 1) / (n + 1)
    neg = np.sort(np.concatenate([pos - 0.5 / (n + 1), [0.0]]))  # one just below each positive
    missed = n // 50  # 2% of n
    cut = pos[missed]
    assert (pos >= cut).mean() == pytest.approx(0.98)
    assert set_aside(neg, pos, 0.98) == pytest.approx((neg < cut).mean())
    assert set_aside(neg, pos, 0.98) > set_aside(neg, pos, 1.0) == pytest.approx(2 / len(neg))
    assert set_aside(neg, pos[:1], 0.98) == set_aside(neg, pos[:1], 1.0)  # one positive: it stays


def test_a_policy_the_features_cannot_score_is_refused() -> None:
    """The features hold 3x3 smoothing and the top-10 mean; another policy used to be scored
    with them anyway."""
    from engine.contract import TriagePolicy

    feats = [features(np.full((4, 4), 0.7))]
    assert shipped_scores(feats, TriagePolicy(score_method="smoothed_max")) == pytest.approx([0.7])
    with pytest.raises(ValueError, match="smooth_cells=5"):
        shipped_scores(feats, TriagePolicy(score_method="smoothed_max", smooth_cells=5))
    with pytest.raises(ValueError, match="top_k=5"):
        shipped_scores(feats, TriagePolicy(score_method="top_k_mean", top_k=5))
    assert len(shipped_scores(feats, TriagePolicy(score_method="region_logistic", top_k=5))) == 1


@pytest.fixture(scope="module")
def table() -> PatchTable:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    probs = np.clip(labels[:, None] * 0.6 + rng.uniform(0, 0.4, (400, VARIANTS)), 0, 1).astype(np.float32)
    idx = rng.permutation(400)
    return PatchTable(probs, labels, np.arange(400), np.sort(idx[:200]), np.sort(idx[200:]))


def test_replicates_are_new_draws_of_the_same_design(table: PatchTable) -> None:
    first = build_set(table, "held-out")
    again = build_set(table, "held-out", 0)
    other = build_set(table, "held-out", 1)
    assert [s.name for s in first] == [s.name for s in again]
    assert all(np.array_equal(a.probs, b.probs, equal_nan=True) for a, b in zip(first, again, strict=True))
    # the same classes and negative sizes ...
    assert [s.size_class for s in other] == [s.size_class for s in first]
    negatives = [s.tissue_tiles for s in first if s.size_class == "negative"]
    assert [s.tissue_tiles for s in other if s.size_class == "negative"] == negatives
    # ... laid out and filled anew
    same = [
        a.probs.shape == b.probs.shape and np.array_equal(a.probs, b.probs, equal_nan=True)
        for a, b in zip(first, other, strict=True)
    ]
    assert not any(same)
    # positives are drawn from the held-out half's tumour patches only
    tumour_p = {float(p) for p in table.probs[table.heldout][table.labels[table.heldout] == 1].ravel()}
    for s in other:
        if s.size_class != "negative":
            assert {float(p) for p in s.probs[s.tumour]} <= tumour_p


def test_confident_normals_counts_the_stubborn_patches() -> None:
    labels = np.array([0, 0, 0, 0, 1])
    probs = np.zeros((5, VARIANTS), np.float32)
    probs[0] = 0.95  # always called tumour: 8 confident variants
    probs[1, :2] = 0.92  # confident twice
    probs[3, :] = 0.95  # as stubborn as patch 0, but in the other half
    probs[4, :] = 0.99  # a tumour patch: not counted
    table = PatchTable(probs, labels, np.arange(5), np.array([0, 1, 2, 4]), np.array([3]))
    line = confident_normals(table, "selection")
    # 10 confident of 3 x 8 normal variants; the one stubborn patch holds 8 of the 10
    assert line == (
        f"normal patch variants at p >= 0.9: {10 / 24:.2%} of 3 patches x {VARIANTS}; "
        f"1 patches confident in >= 4 of their {VARIANTS} variants hold 80% of them"
    )
    assert "1 patches" in confident_normals(table, "held-out")


def test_without_stubborn_normals_keeps_them_off_every_slide(table: PatchTable) -> None:
    half = table.half("selection")
    first_normal = half[table.labels[half] == 0][0]
    probs = table.probs.copy()
    probs[first_normal] = 0.97  # the model calls this normal patch tumour in every variant
    stubborn = dataclasses.replace(table, probs=probs)

    def negative_max(t: PatchTable) -> float:
        return max(float(np.nanmax(s.probs)) for s in build_set(t, "selection") if s.size_class == "negative")

    assert negative_max(stubborn) == pytest.approx(0.97)  # drawn into the negatives ...
    kept, n_out = without_stubborn_normals(stubborn)
    assert n_out == 1 and kept.labels[first_normal] == -1
    assert np.array_equal(np.delete(kept.labels, first_normal), np.delete(table.labels, first_normal))
    assert negative_max(kept) <= 0.4  # ... and never once it is left out (other normals: 0-0.4)


def test_regions_form_at_the_tile_threshold_asked_for() -> None:
    grid = np.full((4, 6), np.nan)
    grid[1, 1:5] = [0.95, 0.6, 0.6, 0.95]  # one region at 0.5; two single tiles at 0.8
    assert features(grid).stats.cells.tolist() == [4]
    assert features(grid, 0.8).stats.cells.tolist() == [1, 1]


@pytest.mark.parametrize("argv", [["--tile-threshold", "0.8"], ["--calibrate", "--tile-threshold", "1.5"]])
def test_tile_threshold_only_with_a_calibration_and_inside_0_1(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert parse_args(["--calibrate", "--dry-run", "--tile-threshold", "0.8"]).tile_threshold == 0.8


def test_a_probability_cache_serves_only_the_model_that_made_it(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_model(tmp_path / "colour.onnx")
    cache = tmp_path / "slide-probs.npz"
    n = 3000
    stale = np.full((n, VARIANTS), 0.5, np.float32)  # another model's table left in the folder
    zeros = np.zeros(n, np.int64)
    np.savez(cache, probs=stale, labels=zeros, sources=zeros, select=zeros, heldout=zeros, model="another")
    made = patch_table(shared_data / "pcam", model, cache)
    assert "another model's probabilities" in capsys.readouterr().out
    assert len(made.probs) == n and not np.allclose(made.probs, 0.5)
    again = patch_table(shared_data / "pcam", model, cache)
    assert "# model over" not in capsys.readouterr().out  # served from its own cache
    np.testing.assert_array_equal(again.probs, made.probs)
