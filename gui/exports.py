"""Exports of an analysed slide: overlay PNG, GeoJSON for QuPath, tile CSV, PDF/HTML report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.caveats import caption
from engine.errors import ResultsError
from engine.heatmap import overlay_image
from engine.model import Model
from engine.model_card import INTENDED_USE, LIMITS, THRESHOLDS_NOTE, clinical_card
from engine.outputs import TILES, read_summary, save_image_atomic, write_bytes_atomic, write_json_atomic
from engine.regions import Region, regions_geojson
from engine.results import SavedAnalysis
from engine.slide import thumbnail_downsample
from gui.info_panel import slide_facts
from gui.report import ReportData, write_report
from gui.state import OverlayState
from gui.workers import OpenedSlide

KINDS = {
    "overlay": ("_overlay.png", "PNG image (*.png)"),
    "geojson": ("_regions.geojson", "GeoJSON (*.geojson *.json)"),
    "csv": ("_tiles.csv", "CSV (*.csv)"),
    "report": ("_report.pdf", "PDF (*.pdf);;HTML (*.html)"),
}


@dataclass(frozen=True)
class ExportSource:
    """What an export is made of, taken on the UI thread (:meth:`of`) so the export can be written
    in a worker: the result shown, the slide's facts and thumbnail, and the display's opacity and
    threshold at that moment."""

    saved: SavedAnalysis
    slide_name: str
    slide_dimensions: tuple[int, int]
    facts: list[tuple[str, str]]
    thumbnail: NDArray[np.uint8]
    opacity: float
    threshold: float
    model: Model | None  # the model loaded now; its card is read in the worker (a file)

    @classmethod
    def of(
        cls, opened: OpenedSlide, saved: SavedAnalysis, overlay: OverlayState, model: Model | None
    ) -> ExportSource:
        return cls(
            saved=saved,
            slide_name=opened.slide.name,
            slide_dimensions=opened.slide.dimensions,
            facts=slide_facts(opened.slide, saved.summary),
            thumbnail=opened.thumbnail,
            opacity=overlay.opacity,
            threshold=overlay.threshold,
            model=model,
        )


def overlay_picture(source: ExportSource) -> Image.Image:
    """The thumbnail with the heatmap as shown (opacity, threshold), legend and caption."""
    saved, thumb = source.saved, source.thumbnail
    return overlay_image(
        thumb,
        thumbnail_downsample(source.slide_dimensions, thumb),
        saved.grid,
        saved.prob_grid(),
        source.opacity,
        caption(saved.summary),
        source.threshold,
    )


def shown_regions(source: ExportSource) -> list[Region]:
    """The saved result's regions at the threshold shown. Not ``overlay.regions``: while the slide
    is analysed again those are the new run's, and right after a result is shown they may not
    have been found yet."""
    saved = source.saved
    return saved.regions(max(saved.policy.tile_threshold, source.threshold))


def saved_tiles_csv(saved: SavedAnalysis) -> bytes:
    """``tiles.csv`` of the result shown; refused if the folder now holds another result."""
    try:
        data = (saved.folder / TILES).read_bytes()
    except OSError as exc:
        raise ResultsError(f"{saved.folder / TILES}: cannot be read ({exc.strerror or exc})") from exc
    if read_summary(saved.folder) != saved.summary:  # read after the tiles: a new result shows here
        raise ResultsError(f"{saved.folder.name}: replaced by a newer result; open the slide again")
    return data


def card_rows(model: Model | None, saved: SavedAnalysis) -> list[tuple[str, str]]:
    """The model card's numbers, use and limits for the report; the numbers only when the
    current model made the result (another model's numbers would not describe it)."""
    if model is None or model.sha256 != saved.model_sha256:
        return [("Intended use", INTENDED_USE), ("Limits", LIMITS), ("Thresholds", THRESHOLDS_NOTE)]
    card = clinical_card(model)
    return [
        ("Model measured", card.metrics_text()),
        ("Intended use", card.intended_use),
        ("Limits", card.limits),
        ("Thresholds", card.thresholds_note),
    ]


def export(kind: str, path: Path, source: ExportSource) -> None:
    """Write one export to ``path``; raises OutputError/OSError if it cannot be written, and
    ResultsError if the result's own files cannot be read. Slow on big grids (regions, images,
    PDF): run it in a worker.

    Everything exported is of ``source.saved``, the result shown: the GeoJSON and the report hold
    its regions at the display threshold of the moment the export was asked for.
    """
    saved = source.saved
    if kind == "overlay":
        save_image_atomic(path, overlay_picture(source))
    elif kind == "geojson":
        write_json_atomic(path, regions_geojson(shown_regions(source), saved.model_version))
    elif kind == "csv":
        write_bytes_atomic(path, saved_tiles_csv(saved))
    elif kind == "report":
        data = ReportData(
            source.slide_name,
            source.facts,
            saved.summary,
            shown_regions(source),
            source.thumbnail,
            overlay_picture(source),
            model_card=card_rows(source.model, saved),
        )
        write_report(path, data)
    else:
        raise ValueError(f"unknown export {kind!r}")
