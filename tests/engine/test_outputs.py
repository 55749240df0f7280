from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import OutputError
from engine.heatmap import colour_lut, lut_index
from engine.model import Model
from engine.outputs import read_summary, write_bytes_atomic, write_json_atomic, write_results
from engine.pipeline import AnalysisParams, analyse_slide
from engine.slide import ArraySlide


def test_every_output_is_written(tmp_path: Path, tissue_slide: ArraySlide, model: Model) -> None:
    params = AnalysisParams()
    analysis = analyse_slide(tissue_slide, model, params)
    summary = write_results(tmp_path / "s", analysis, model, params)
    folder = tmp_path / "s"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["summary.json", "tiles.csv", "heatmap.png", "overlay.png", "tissue.png", "regions.geojson"]
    )
    assert read_summary(folder) == summary
    assert summary.model.sha256 == model.sha256
    assert summary.tiles.analysed == len(analysis.probs)
    assert summary.category == model.contract.triage.category(summary.score)
    with (folder / "tiles.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(analysis.probs)
    assert {"x0", "y0", "w0", "h0", "tissue_fraction", "prob"} == set(rows[0])
    assert float(rows[0]["prob"]) == pytest.approx(float(analysis.probs[0]), abs=1e-6)
    heat = Image.open(folder / "heatmap.png")
    scale = summary.heatmap_px_per_cell
    assert heat.size == (analysis.plan.grid.t_cols * scale, analysis.plan.grid.t_rows * scale)
    # A cell the model scored is coloured from the colour map above the tile threshold and
    # transparent below it; a cell without a tile is transparent.
    floor = model.contract.triage.tile_threshold
    heat_rgba = np.asarray(heat.convert("RGBA"))
    for r, c, p in zip(analysis.plan.t_rows, analysis.plan.t_cols, analysis.probs, strict=True):
        pixel = heat_rgba[int(r) * scale, int(c) * scale]
        if p >= floor:
            expected = colour_lut()[lut_index(np.array([p]), floor)[0]]
            assert tuple(pixel[:3]) == pytest.approx(tuple(expected), abs=2) and pixel[3] == 255
        else:
            assert pixel[3] == 0
    overlay = Image.open(folder / "overlay.png")
    assert overlay.width >= analysis.plan.thumbnail.shape[1]
    geo = json.loads((folder / "regions.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == summary.verdict.regions
    tissue = np.asarray(Image.open(folder / "tissue.png"))
    assert tissue.shape == analysis.plan.tissue_mask.shape
    assert ((tissue > 0) == analysis.plan.tissue_mask).all()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="choose an output folder"):
        write_json_atomic(blocker / "summary.json", {})


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    class Boom:
        pass

    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"bad": Boom()})
    assert list(tmp_path.iterdir()) == []


def test_unfinished_folder_has_no_summary(tmp_path: Path) -> None:
    (tmp_path / "tiles.csv").write_text("x0\n")
    assert read_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text("{ half")
    assert read_summary(tmp_path) is None


def test_colourise_maps_probabilities_and_hides_missing_tiles() -> None:
    import numpy as np

    from engine.heatmap import colourise

    probs = np.array([[0.2, 0.5, 1.0, np.nan]], dtype=np.float32)
    rgba = colourise(probs, alpha=200, floor=0.5)
    # below the floor and missing: transparent; the floor yellow, 1 dark red, both at alpha
    assert rgba[0, 0, 3] == 0 and rgba[0, 3, 3] == 0
    assert tuple(rgba[0, 1, :3]) == (255, 230, 40) and tuple(rgba[0, 2, :3]) == (110, 0, 20)
    assert rgba[0, 1, 3] == 200 and rgba[0, 2, 3] == 200
    assert (colourise(probs, floor=0.0)[0, :3, 3] == 255).all()  # solid at full opacity


def test_heatmap_colours_stay_clear_of_haematoxylin_and_eosin() -> None:
    """No colour of the map is near H&E purple or pink (hue 270-340 degrees)."""
    import colorsys

    from engine.heatmap import colour_lut

    for r, g, b in colour_lut().tolist():
        hue = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0] * 360
        assert hue < 60 or hue > 345, (r, g, b, hue)


def test_writers_of_the_same_file_never_share_a_temporary_file(tmp_path: Path) -> None:
    """summary.csv of an output folder may be rebuilt by two threads, or by two machines whose
    processes have the same pid, at the same moment: each write stages its own file."""
    target = tmp_path / "summary.csv"
    contents = [f"writer {w} ".encode() * 20_000 for w in range(6)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(40):
                write_bytes_atomic(target, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in contents  # one writer's content, whole
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]  # no temporary file left
