"""Reading a finished analysis back from its folder gives the run's grid, probabilities and regions."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ResultsError
from engine.model import Model
from engine.outputs import SUMMARY, TILES, write_results
from engine.pipeline import AnalysisParams, analyse_slide
from engine.regions import find_regions
from engine.results import load_saved
from engine.slide import ArraySlide
from tests.onnx_models import write_model


def _slide(blue_x: int = 300) -> ArraySlide:
    rng = np.random.default_rng(0)
    pixels = np.full((900, 1300, 3), 240, dtype=np.uint8)
    pixels[100:800, 100:1200] = rng.integers(60, 200, (700, 1100, 3), dtype=np.uint8)
    pixels[300:600, blue_x : blue_x + 400] = (40, 30, 120)  # dark blue: the colour model's "tumour"
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


@pytest.mark.parametrize(
    ("blue_x", "stride"),
    [(700, None), (300, 40)],  # the same grid with other tiles (mixed silently before); another grid
)
def test_a_result_replaced_while_it_is_read_is_never_mixed(
    tmp_path: Path, blue_x: int, stride: int | None
) -> None:
    model = Model.load(write_model(tmp_path / "m.onnx"), threads=1)
    old, new = tmp_path / "old", tmp_path / "new"
    write_results(old, analyse_slide(_slide(), model), model, AnalysisParams())
    params = AnalysisParams(stride_px=stride)
    write_results(new, analyse_slide(_slide(blue_x), model, params), model, params)
    fresh = load_saved(new)
    assert fresh is not None
    # The old result's tiles.csv is a pipe: load_saved blocks on it after reading the old summary,
    # and meanwhile another run puts its result in place, as a writer would, then the new tiles
    # come through the pipe.
    os.replace(old / TILES, tmp_path / "old_tiles.csv")
    os.mkfifo(old / TILES)

    def rewrite() -> None:
        with open(old / TILES, "wb") as pipe:  # returns once load_saved has opened it
            shutil.copyfile(new / SUMMARY, old / "summary.tmp")
            os.replace(old / "summary.tmp", old / SUMMARY)
            shutil.copyfile(new / TILES, old / "tiles.tmp")
            os.replace(old / "tiles.tmp", old / TILES)  # the pipe's name now holds the new tiles
            pipe.write((new / TILES).read_bytes())

    writer = threading.Thread(target=rewrite)
    writer.start()
    saved = load_saved(old)
    writer.join()
    assert saved is not None and saved.summary == fresh.summary
    np.testing.assert_array_equal(saved.t_cols, fresh.t_cols)
    np.testing.assert_array_equal(saved.probs, fresh.probs)
