"""Exports of an analysed slide: overlay PNG, GeoJSON for QuPath, tile CSV, PDF/HTML report."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from engine.heatmap import overlay_image
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
    score = "n/a" if saved.score is None else f"{saved.score:.3f}"
    caption = f"score {score} · {saved.category} · model {saved.model_version}"
    return overlay_image(
        thumb,
        opened.slide.dimensions[0] / thumb.shape[1],
        saved.grid,
        saved.prob_grid(),
        overlay.opacity,
        caption,
        overlay.threshold or None,
    )


def export(kind: str, path: Path, opened: OpenedSlide, saved: SavedAnalysis, overlay: OverlayState) -> None:
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
        )
        write_report(path, data)
    else:
        raise ValueError(f"unknown export {kind!r}")
