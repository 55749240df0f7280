"""The one-page slide report: HTML (images embedded) or PDF (QTextDocument printed to QPdfWriter)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from PySide6.QtCore import QMarginsF, QSizeF, QUrl
from PySide6.QtGui import QImage, QPageLayout, QPageSize, QPdfWriter, QTextDocument

from engine.caveats import caveats
from engine.outputs import write_bytes_atomic, write_text_atomic
from engine.regions import Region
from engine.summary import SlideSummary
from engine.triage import explain_score

DISCLAIMER = (
    "Research and triage aid only, not a diagnosis. EquiTriage ranks lymph-node slides and "
    "regions by how likely they are to hold breast-cancer metastases so that a pathologist reads "
    "them first; every slide must still be read in full by a pathologist. It was trained on "
    "PatchCamelyon (CAMELYON16) H&E patches and is not validated for other tissues, stains or "
    "scanners."
)
MAX_REGIONS = 10
IMAGE_SIDE_PX = 520


@dataclass
class ReportData:
    slide_name: str
    facts: list[tuple[str, str]]
    summary: SlideSummary
    regions: list[Region]
    thumbnail: NDArray[np.uint8]
    overlay: Image.Image
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    model_card: list[tuple[str, str]] = field(default_factory=list)  # (what, text): metrics, use, limits


def _png(image: Image.Image, side: int = IMAGE_SIDE_PX) -> bytes:
    image = image.copy()
    image.thumbnail((side, side))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def report_html(data: ReportData, image_src: dict[str, str]) -> str:
    """The report as HTML; ``image_src`` maps "thumbnail" and "overlay" to image URLs."""
    s = data.summary
    e = html.escape
    score = s.score
    model = s.model
    th = s.thresholds
    tiles = s.tiles
    largest = "n/a" if s.verdict.largest_region_mm2 is None else f"{s.verdict.largest_region_mm2:g}"
    # Qt's rich text ignores CSS padding on cells: widths and cellpadding lay the table out
    cell = '<td align="right">'
    rows = "".join(
        f"<tr>{cell}{i}</td>{cell}{r.max_prob:.3f}</td>{cell}{r.mean_prob:.3f}</td>"
        f"{cell}{r.area_mm2:.3f}</td>{cell}{r.l0_centroid[0]:.0f}, {r.l0_centroid[1]:.0f}</td></tr>"
        for i, r in enumerate(data.regions[:MAX_REGIONS], start=1)
    )
    notes = caveats(s)
    warning = "".join(f'<p class="caveat">&#9888; {e(n)}</p>' for n in notes)
    card = "".join(f'<tr><th width="22%">{e(k)}</th><td>{e(v)}</td></tr>' for k, v in data.model_card)
    more = len(data.regions) - MAX_REGIONS
    facts = "".join(f'<tr><th width="22%">{e(k)}</th><td>{e(v)}</td></tr>' for k, v in data.facts)
    version = e(model.version)
    sha = e(model.sha256[:12])
    analysed = f"{e(s.created)}, engine {e(s.engine_version)}"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>EquiTriage report: {e(data.slide_name)}</title>
<style>
body {{ font-family: sans-serif; font-size: 10pt; margin: 1.2em; }}
h1 {{ font-size: 15pt; margin: 0 0 4pt 0; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 1pt 6pt; text-align: left; vertical-align: top; }}
.regions td, .regions th {{ border-bottom: 1px solid #ccc; }}
.verdict {{ font-size: 13pt; font-weight: bold; }}
.disclaimer {{ font-size: 8pt; color: #444; border-top: 1px solid #999; padding-top: 4pt; }}
.caveat {{ font-weight: bold; color: #8a4b00; background-color: #fff3d6; }}
</style></head><body>
<h1>EquiTriage report: {e(data.slide_name)}</h1>
<p class="verdict">Score {"n/a" if score is None else f"{float(score):.3f}"} &middot;
{e(s.category.upper())}{" (see the warnings below)" if notes else ""}</p>
{warning}
<p>{tiles.analysed} tissue tiles analysed, {tiles.positive} above the tile
threshold {th.tile:g}; estimated tumour area {s.verdict.tumour_area_mm2} mm&sup2;
(regions the score believes), largest region {largest} mm&sup2;.
Categories: high &ge; {th.high:g}, intermediate &ge; {th.low:g}
({e(explain_score(th.score_method, th.top_k))}).</p>
<table cellpadding="2" cellspacing="0"><tr>
<td><img src="{image_src["thumbnail"]}" width="300"><br>Slide</td>
<td><img src="{image_src["overlay"]}" width="300"><br>Heatmap: tumour probability,<br>
yellow &rarr; red above the display threshold</td>
</tr></table>
<h2 style="font-size:11pt">Suspicious regions ({len(data.regions)})</h2>
<table class="regions" border="1" cellpadding="4" cellspacing="0" width="75%">
<tr><th width="8%" align="right">#</th><th width="15%" align="right">max p</th>
<th width="15%" align="right">mean p</th><th width="17%" align="right">area mm&sup2;</th>
<th width="45%" align="right">centre (level-0 px)</th></tr>
{rows}</table>
{f"<p>and {more} more.</p>" if more > 0 else ""}
<h2 style="font-size:11pt">Slide and model</h2>
<table cellpadding="2" cellspacing="0" width="100%">{facts}
<tr><th>Model</th><td>{version} (sha256 {sha}&hellip;)</td></tr>
<tr><th>Analysed</th><td>{analysed}</td></tr>
<tr><th>Report made</th><td>{e(data.created)}</td></tr>
{card}</table>
<p class="disclaimer">{e(DISCLAIMER)}</p>
</body></html>
"""


def write_html_report(path: Path, data: ReportData) -> None:
    """A self-contained HTML file (images as data URLs)."""
    src = {
        "thumbnail": "data:image/png;base64,"
        + base64.b64encode(_png(Image.fromarray(data.thumbnail))).decode("ascii"),
        "overlay": "data:image/png;base64," + base64.b64encode(_png(data.overlay)).decode("ascii"),
    }
    write_text_atomic(path, report_html(data, src))


def write_pdf_report(path: Path, data: ReportData) -> None:
    """A one-page A4 PDF of the same report."""
    doc = QTextDocument()
    for name, image in (("thumbnail", Image.fromarray(data.thumbnail)), ("overlay", data.overlay)):
        qimage = QImage.fromData(_png(image))
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(f"{name}.png"), qimage)
    doc.setHtml(report_html(data, {"thumbnail": "thumbnail.png", "overlay": "overlay.png"}))
    buf_path = path.with_name(f".{path.name}.tmp")
    writer = QPdfWriter(str(buf_path))
    writer.setPageLayout(
        QPageLayout(
            QPageSize(QPageSize.PageSizeId.A4),
            QPageLayout.Orientation.Portrait,
            QMarginsF(12, 12, 12, 12),
            QPageLayout.Unit.Millimeter,
        )
    )
    writer.setResolution(144)
    writer.setTitle(f"EquiTriage report: {data.slide_name}")
    writer.setCreator("EquiTriage")
    rect = writer.pageLayout().paintRectPixels(writer.resolution())
    doc.setPageSize(QSizeF(rect.width(), rect.height()))
    doc.print_(writer)
    del writer  # flushes and closes the file
    try:
        data_bytes = buf_path.read_bytes()
    finally:
        buf_path.unlink(missing_ok=True)
    write_bytes_atomic(path, data_bytes)


def write_report(path: Path, data: ReportData) -> None:
    """PDF for ``.pdf``, HTML otherwise."""
    if path.suffix.lower() == ".pdf":
        write_pdf_report(path, data)
    else:
        write_html_report(path, data)
