"""Exports of an analysed slide: overlay PNG, GeoJSON for QuPath, tile CSV, PDF/HTML report."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from engine.caveats import caption
from engine.heatmap import overlay_image
from engine.model import Model
from engine.model_card import INTENDED_USE, LIMITS, THRESHOLDS_NOTE, clinical_card
from engine.outputs import TILES, save_image_atomic, write_json_atomic
from engine.regions import regions_geojson
from engine.results import SavedAnalysis
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


def overlay_picture(opened: OpenedSlide, saved: SavedAnalysis, overlay: OverlayState) -> Image.Image:
    """The thumbnail with the heatmap as shown (opacity, threshold), legend and caption."""
    thumb = opened.thumbnail
    return overlay_image(
        thumb,
        opened.slide.dimensions[0] / thumb.shape[1],
        saved.grid,
        saved.prob_grid(),
        overlay.opacity,
        caption(saved.summary),
        overlay.threshold,
    )


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


def export(
    kind: str,
    path: Path,
    opened: OpenedSlide,
    saved: SavedAnalysis,
    overlay: OverlayState,
    model: Model | None = None,
) -> None:
    """Write one export to ``path``; raises OutputError/OSError if it cannot be written.

    The GeoJSON holds the regions as displayed (at the current threshold).
    """
    if kind == "overlay":
        save_image_atomic(path, overlay_picture(opened, saved, overlay))
    elif kind == "geojson":
        write_json_atomic(path, regions_geojson(overlay.regions, saved.model_version))
    elif kind == "csv":
        shutil.copyfile(saved.folder / TILES, path)
    elif kind == "report":
        data = ReportData(
            opened.slide.name,
            slide_facts(opened.slide),
            saved.summary,
            list(overlay.regions),
            opened.thumbnail,
            overlay_picture(opened, saved, overlay),
            model_card=card_rows(model, saved),
        )
        write_report(path, data)
    else:
        raise ValueError(f"unknown export {kind!r}")
