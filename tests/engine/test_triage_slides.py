"""The grid origin does not change the answer: real slides, a mosaic slide, OpenSlide, the shipped model.

Real tissue is where the grid origin matters, so the real slides of the shared data (no lymph
node among them, but real H&E without seams) are analysed with the tile grid moved by half a
tile across, down, and both. A mosaic built from PCam patches is the one slide here with a
known metastasis; its category must hold too. A *negative* mosaic is not used: a shifted grid
cuts each of its tiles from four PCam patches with sharp seams no real slide has, and the
models fire on those seams (``benchmarks/seam_composites.py``: composites of the labelled
centres of normal patches come out positive about twice as often as single normal patches),
so there it would measure the mosaic, not the product.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.model import Model
from engine.pipeline import analyse_slide
from engine.slide import Slide, open_slide
from engine.triage import SlideVerdict


class ShiftedSlide(Slide):
    """A view of ``base`` whose level-0 origin is moved by ``l0_dx, l0_dy`` pixels."""

    def __init__(self, base: Slide, l0_dx: int, l0_dy: int) -> None:
        self.base, self.l0_dx, self.l0_dy = base, l0_dx, l0_dy
        self.path, self.name, self.vendor = base.path, base.name + "-shifted", base.vendor
        self.level_downsamples = base.level_downsamples
        self.level_dimensions = tuple(
            (int((w * ds - l0_dx) // ds), int((h * ds - l0_dy) // ds))
            for (w, h), ds in zip(base.level_dimensions, base.level_downsamples, strict=True)
        )
        self._set_file_mpp(base.mpp, "file")
        self.objective_power, self.properties = base.objective_power, base.properties

    def read_region(self, l0_xy: tuple[int, int], level: int, lvl_size: tuple[int, int]) -> NDArray[np.uint8]:
        return self.base.read_region((l0_xy[0] + self.l0_dx, l0_xy[1] + self.l0_dy), level, lvl_size)


def build_mosaic(data: Path, out: Path, n_tissue: int, n_tumour: int, seed: int) -> Path:
    from scripts.mosaic import assign_sources, grid_for_count, make_layout
    from scripts.mosaic_slide import PCAM_ZIP, PatchArchive, SlideSpec, write_slide

    zip_path = data / "pcam" / PCAM_ZIP
    archive = PatchArchive(zip_path)
    rows, cols = grid_for_count(n_tissue, 0.45, aspect=1.0)
    layout = make_layout(rows, cols, n_tissue, n_tumour, seed, n_tissue_blobs=1, n_tumour_blobs=1)
    sources = assign_sources(layout, archive.ids(("valid",), 0), archive.ids(("valid",), 1), seed)
    spec = SlideSpec(layout, sources, 0.972, (1, 4), 90, seed, "test mosaic")
    write_slide(spec, zip_path, out)
    return out


def half_tile_l0(slide: Slide, model: Model) -> int:
    """Half a model tile in level-0 pixels of ``slide``."""
    assert slide.mpp is not None
    return round(model.contract.input_size * model.contract.mpp / slide.mpp / 2)


def shifted_verdicts(slide: Slide, model: Model) -> list[tuple[tuple[int, int], SlideVerdict]]:
    """The verdict with the grid where it is, and moved by half a tile across, down and both."""
    h = half_tile_l0(slide, model)
    out = []
    for dx, dy in ((0, 0), (h, 0), (0, h), (h, h)):
        view = ShiftedSlide(slide, dx, dy) if dx or dy else slide
        out.append(((dx, dy), analyse_slide(view, model).verdict))
    return out


@pytest.fixture(scope="module")
def shipped() -> Model:
    return Model.load(None, threads=1)


@pytest.mark.parametrize(
    ("name", "mpp"),
    [
        ("CMU-1-Small-Region.svs", None),  # Aperio, 0.499 µm/px in the file
        ("tcga-cr-7395-01a-01-ts1.svs", 0.5),  # records no resolution: read as 20x
        ("tcga-cr-7395-01a-01-ts1.svs", 0.25),  # ... and as 40x (other tiles, other content)
    ],
)
def test_half_a_tile_shift_keeps_the_category_on_real_slides(
    shared_data: Path, shipped: Model, name: str, mpp: float | None
) -> None:
    """A slide whose score lies well away from both thresholds keeps its category; one within
    :data:`NEAR_LOG_ODDS` of a threshold may fall on either side of that one threshold, never
    two categories away (the TCGA slide read at 40x scores 0.035 against a low threshold of
    0.017 with the model shipped from session 18)."""
    with open_slide(shared_data / "slides" / name, mpp=mpp) as slide:
        results = shifted_verdicts(slide, shipped)
    (_, plain), *moved = results
    assert plain.tiles_analysed >= 50, plain
    policy = shipped.contract.triage
    near = near_a_threshold(plain.score, (policy.low_threshold, policy.high_threshold))
    for shift, verdict in moved:
        assert verdict.tiles_analysed >= 0.8 * plain.tiles_analysed, (shift, verdict)
        steps = abs(ORDER.index(verdict.category) - ORDER.index(plain.category))
        assert steps <= (1 if near else 0), (shift, plain, verdict)


NEAR_LOG_ODDS = 1.0
ORDER = ("low suspicion", "intermediate", "high suspicion")


def near_a_threshold(score: float | None, thresholds: tuple[float, ...]) -> bool:
    """Whether ``score`` lies within :data:`NEAR_LOG_ODDS` of one of ``thresholds``."""
    if score is None:
        return False
    return any(abs(_logit(score) - _logit(t)) < NEAR_LOG_ODDS for t in thresholds)


def _logit(p: float) -> float:
    return math.log(max(p, 1e-9) / max(1 - p, 1e-9))


def test_near_a_threshold_is_measured_in_log_odds() -> None:
    assert near_a_threshold(0.035, (0.0172, 0.69)) and not near_a_threshold(0.36, (0.0172, 0.69))
    assert near_a_threshold(0.9, (0.02, 0.8)) and not near_a_threshold(0.98, (0.02, 0.8))
    assert not near_a_threshold(None, (0.5,)) and not near_a_threshold(0.0, (0.0172,))


def test_half_a_tile_shift_keeps_a_metastasis_high(shared_data: Path, shipped: Model, tmp_path: Path) -> None:
    path = build_mosaic(shared_data, tmp_path / "metastasis.tiff", 400, 40, 6)
    with open_slide(path) as slide:
        results = shifted_verdicts(slide, shipped)
    for shift, verdict in results:
        assert verdict.tiles_analysed > 200, (shift, verdict)
        assert verdict.category == "high suspicion", (shift, verdict)
