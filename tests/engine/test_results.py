"""Reading a finished analysis back from its folder gives the run's grid, probabilities and regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.model import Model
from engine.outputs import TILES, write_results
from engine.pipeline import AnalysisParams, analyse_slide
from engine.regions import find_regions
from engine.results import ResultsError, load_saved
from engine.slide import ArraySlide
from tests.onnx_models import write_model


def _slide() -> ArraySlide:
    rng = np.random.default_rng(0)
    pixels = np.full((900, 1300, 3), 240, dtype=np.uint8)
    pixels[100:800, 100:1200] = rng.integers(60, 200, (700, 1100, 3), dtype=np.uint8)
    pixels[300:600, 300:700] = (40, 30, 120)  # dark blue: the colour model's "tumour"
    return ArraySlide(pixels, mpp=0.5, name="synthetic")


@pytest.mark.parametrize("stride", [None, 40])
def test_round_trip(tmp_path: Path, stride: int | None) -> None:
    model = Model.load(write_model(tmp_path / "m.onnx"), threads=1)
    params = AnalysisParams(stride_px=stride)
    analysis = analyse_slide(_slide(), model, params)
    write_results(tmp_path / "out", analysis, model, params)
    saved = load_saved(tmp_path / "out")
    assert saved is not None
    assert saved.grid.t_cols == analysis.plan.grid.t_cols
    assert saved.grid.t_rows == analysis.plan.grid.t_rows
    np.testing.assert_array_equal(saved.t_cols, analysis.plan.t_cols)
    np.testing.assert_array_equal(saved.t_rows, analysis.plan.t_rows)
    np.testing.assert_allclose(saved.probs, analysis.probs, atol=1e-6)
    assert saved.score == analysis.verdict.score
    assert saved.category == analysis.verdict.category
    assert saved.model_version == model.version
    assert saved.model_sha256 == model.sha256
    assert saved.policy == model.contract.triage
    expected = find_regions(
        analysis.prob_grid(), analysis.plan.grid, model.contract.triage.tile_threshold, saved.cell_mm2
    )
    assert [r.cells for r in saved.regions()] == [r.cells for r in expected]
    assert len(saved.regions()) >= 1


def test_missing_and_damaged(tmp_path: Path) -> None:
    assert load_saved(tmp_path) is None
    model = Model.load(write_model(tmp_path / "m.onnx"), threads=1)
    analysis = analyse_slide(_slide(), model)
    write_results(tmp_path / "out", analysis, model, AnalysisParams())
    (tmp_path / "out" / TILES).write_text("x0,y0\n1,2\n", encoding="utf-8")
    with pytest.raises(ResultsError, match="analyse the slide again"):
        load_saved(tmp_path / "out")
