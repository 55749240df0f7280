from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.errors import CancelledError, MissingMppError, Remedy, SlideTooSmallError
from engine.model import Model
from engine.pipeline import AnalysisParams, TileBatch, analyse_slide, resize_patch
from engine.slide import ArraySlide
from tests.engine.conftest import synthetic_pixels


def test_only_tissue_tiles_are_analysed(tissue_slide: ArraySlide, model: Model) -> None:
    result = analyse_slide(tissue_slide, model, AnalysisParams(batch_size=8))
    grid = result.plan.grid
    assert (grid.t_cols, grid.t_rows) == (21, 15)
    boxes = result.plan.l0_boxes
    assert len(boxes) > 0
    # Every analysed tile lies mostly on the tissue rectangle (500..1500, 400..1100).
    cx = boxes[:, 0] + boxes[:, 2] / 2
    cy = boxes[:, 1] + boxes[:, 3] / 2
    assert ((cx > 450) & (cx < 1550) & (cy > 350) & (cy < 1150)).all()
    # And every tile fully inside the tissue is analysed.
    inside = sum(
        1
        for c in range(21)
        for r in range(15)
        if c * 95 >= 500 and c * 95 + 95 <= 1500 and r * 95 >= 400 and r * 95 + 95 <= 1100
    )
    assert len(boxes) >= inside


def test_probabilities_equal_the_model_on_the_same_pixels(tissue_slide: ArraySlide, model: Model) -> None:
    result = analyse_slide(tissue_slide, model, AnalysisParams(batch_size=7, read_threads=3))
    patches = np.stack(
        [tissue_slide.read_region((int(x), int(y)), 0, (95, 95)) for x, y, _, _ in result.plan.l0_boxes]
    )
    np.testing.assert_allclose(result.probs, model.predict(patches), atol=1e-6)
    assert result.verdict.tiles_analysed == len(result.probs)


def test_the_plan_is_announced_once_before_any_tile(tissue_slide: ArraySlide, model: Model) -> None:
    heard: list[object] = []
    result = analyse_slide(
        tissue_slide,
        model,
        AnalysisParams(batch_size=10),
        progress=lambda d, t: heard.append((d, t)),
        on_plan=heard.append,
    )
    assert heard[0] is result.plan and heard[1] == (0, len(result.probs))
    assert heard.count(result.plan) == 1


def test_progress_and_partial_results_cover_every_tile(tissue_slide: ArraySlide, model: Model) -> None:
    seen: list[tuple[int, int]] = []
    batches: list[TileBatch] = []
    result = analyse_slide(
        tissue_slide,
        model,
        AnalysisParams(batch_size=10),
        progress=lambda d, t: seen.append((d, t)),
        on_batch=batches.append,
    )
    total = len(result.probs)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    cols = np.concatenate([b.t_cols for b in batches])
    probs = np.concatenate([b.probs for b in batches])
    np.testing.assert_array_equal(cols, result.plan.t_cols)
    np.testing.assert_array_equal(probs, result.probs)


def test_stride_gives_a_denser_heatmap(tissue_slide: ArraySlide, model: Model) -> None:
    coarse = analyse_slide(tissue_slide, model)
    fine = analyse_slide(tissue_slide, model, AnalysisParams(stride_px=47))
    assert fine.plan.grid.t_cols == (2000 - 95) // 47 + 1
    assert len(fine.probs) > 3 * len(coarse.probs)
    # Tumour area is counted in stride cells, so it does not grow with density.
    assert fine.verdict.tumour_area_mm2 == pytest.approx(coarse.verdict.tumour_area_mm2, rel=0.35)


def test_all_glass_is_a_valid_result(model: Model) -> None:
    slide = ArraySlide(synthetic_pixels(800, 600, (0, 0, 0, 0)), mpp=0.972)
    result = analyse_slide(slide, model)
    assert len(result.probs) == 0
    assert result.verdict.score is None and result.verdict.category == "no tissue"


def test_slide_smaller_than_one_patch(model: Model) -> None:
    slide = ArraySlide(synthetic_pixels(90, 90, (0, 0, 90, 90)), mpp=0.972)
    with pytest.raises(SlideTooSmallError, match="smaller than one model patch"):
        analyse_slide(slide, model)


def test_slide_without_mpp(model: Model) -> None:
    slide = ArraySlide(synthetic_pixels(400, 400, (0, 0, 400, 400)), mpp=None)
    with pytest.raises(MissingMppError, match="does not record its µm/px; give its µm/px") as info:
        analyse_slide(slide, model)
    assert info.value.remedy is Remedy.SET_MPP


def test_cancel_stops_the_analysis(tissue_slide: ArraySlide, model: Model) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 10:
            cancel.set()

    with pytest.raises(CancelledError):
        analyse_slide(tissue_slide, model, AnalysisParams(batch_size=5), progress=progress, cancel=cancel)


def test_slide_at_40x_reads_a_coarser_level(model: Model) -> None:
    # 0.25 µm/px: a 95 px patch at 0.972 covers 369 level-0 px; level 1 (downsample 4) fits.
    slide = ArraySlide(synthetic_pixels(2000, 1200, (200, 200, 1800, 1000)), mpp=0.25)
    result = analyse_slide(slide, model)
    assert result.plan.level == 1
    assert (result.plan.grid.t_cols, result.plan.grid.t_rows) == (5, 3)


def test_resize_patch_keeps_colour() -> None:
    pixels = np.full((369, 369, 3), 123, dtype=np.uint8)
    out = resize_patch(pixels, 95)
    assert out.shape == (95, 95, 3) and (out == 123).all()
