"""Per-slide result files, each written atomically; ``summary.json`` last, as the completion mark.

A folder holding ``summary.json`` is a finished analysis. Temporary files are hidden
(``.name.tmp-PID``) and never look like results, so a crash or Ctrl-C leaves nothing half-written
that could pass for whole.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine import __version__
from engine.errors import OutputError
from engine.heatmap import heatmap_image, overlay_image
from engine.model import Model
from engine.pipeline import AnalysisParams, SlideAnalysis
from engine.regions import Region, find_regions, regions_geojson

SUMMARY = "summary.json"
TILES = "tiles.csv"
HEATMAP = "heatmap.png"
OVERLAY = "overlay.png"
REGIONS = "regions.geojson"
TISSUE = "tissue.png"
SUMMARY_FORMAT = 1


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from exc
    except BaseException:
        _discard(tmp)
        raise


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    _atomic(path, write)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def save_image_atomic(path: Path, image: Image.Image) -> None:
    _atomic(path, lambda tmp: image.save(tmp, format="PNG", optimize=False))


def prepare_dir(folder: Path) -> None:
    """Create ``folder``, drop an old completion mark and stale temporary files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SUMMARY).unlink(missing_ok=True)
        for stale in folder.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder} ({exc.strerror or exc})") from exc


def check_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to {folder} ({exc.strerror or exc})") from exc


def tiles_csv(analysis: SlideAnalysis) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["x0", "y0", "w0", "h0", "tissue_fraction", "prob"])
    for (x0, y0, w0, h0), frac, prob in zip(
        analysis.plan.l0_boxes.tolist(),
        analysis.plan.tile_fractions.tolist(),
        analysis.probs.tolist(),
        strict=True,
    ):
        writer.writerow([x0, y0, w0, h0, f"{frac:.3f}", f"{prob:.6f}"])
    return buf.getvalue()


def build_summary(
    analysis: SlideAnalysis,
    model: Model,
    params: AnalysisParams,
    regions: list[Region],
    heatmap_scale: int,
) -> dict[str, Any]:
    contract = model.contract
    grid = analysis.plan.grid
    v = analysis.verdict
    return {
        "format_version": SUMMARY_FORMAT,
        "status": "ok",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine_version": __version__,
        "slide": {**analysis.slide_info, "mpp_used": analysis.plan.mpp},
        "model": {
            "version": contract.model_version,
            "path": str(model.path),
            "sha256": model.sha256,
            "input_px": contract.input_size,
            "mpp": contract.mpp,
        },
        "parameters": {**params.as_dict(contract.input_size), "read_level": analysis.plan.level},
        "thresholds": {
            "tile": contract.triage.tile_threshold,
            "top_k": contract.triage.top_k,
            "high": contract.triage.high_threshold,
            "low": contract.triage.low_threshold,
            "score_method": contract.triage.score_method,
            "smooth_cells": contract.triage.smooth_cells,
            "weights": list(contract.triage.weights),
            "calibration": contract.triage.calibration,
        },
        "tiles": {
            "grid_cols": grid.t_cols,
            "grid_rows": grid.t_rows,
            "grid_total": grid.count,
            "tissue": v.tiles_analysed,
            "analysed": v.tiles_analysed,
            "positive": v.tiles_positive,
            "l0_tile_px": round(grid.l0_tile_px, 3),
            "l0_stride_px": round(grid.l0_stride_px, 3),
        },
        "score": v.score,
        "category": v.category,
        "score_method": v.score_method,
        "tumour_area_mm2": v.tumour_area_mm2,
        "largest_region_mm2": v.largest_region_mm2,
        "regions": len(regions),
        "out_of_distribution": None if analysis.ood is None else analysis.ood.out_of_distribution,
        "ood": None if analysis.ood is None else analysis.ood.as_dict(),
        "heatmap_px_per_cell": heatmap_scale,
        "timings_s": {
            **analysis.timings_s,
            "tiles_per_s": round(v.tiles_analysed / max(analysis.timings_s.get("tiles", 0), 1e-9), 1),
        },
        "outputs": [TILES, HEATMAP, OVERLAY, TISSUE, REGIONS],
    }


def caption(model: Model, analysis: SlideAnalysis) -> str:
    v = analysis.verdict
    score = "n/a" if v.score is None else f"{v.score:.3f}"
    flags = " · OUT OF DISTRIBUTION" if analysis.ood is not None and analysis.ood.out_of_distribution else ""
    if analysis.slide_info.get("mpp_origin") not in (None, "file"):
        flags += f" · µm/px ASSUMED ({analysis.plan.mpp:g})"
    return f"score {score} · {v.category} · model {model.version}{flags}"


def write_results(
    folder: Path, analysis: SlideAnalysis, model: Model, params: AnalysisParams
) -> dict[str, Any]:
    """Write every result file of one slide into ``folder``; return the summary written."""
    prepare_dir(folder)
    contract = model.contract
    grid_probs = analysis.prob_grid()
    cell_mm2 = analysis.plan.grid.cell_mm2(contract.mpp)
    regions = find_regions(grid_probs, analysis.plan.grid, contract.triage.tile_threshold, cell_mm2)
    write_text_atomic(folder / TILES, tiles_csv(analysis))
    heat, scale = heatmap_image(grid_probs, floor=contract.triage.tile_threshold)
    save_image_atomic(folder / HEATMAP, heat)
    overlay = overlay_image(
        analysis.plan.thumbnail,
        analysis.plan.thumb_downsample,
        analysis.plan.grid,
        grid_probs,
        caption=caption(model, analysis),
        threshold=contract.triage.tile_threshold,
    )
    save_image_atomic(folder / OVERLAY, overlay)
    save_image_atomic(folder / TISSUE, Image.fromarray(analysis.plan.tissue_mask.astype(np.uint8) * 255))
    write_json_atomic(folder / REGIONS, regions_geojson(regions, contract.model_version))
    summary = build_summary(analysis, model, params, regions, scale)
    write_json_atomic(folder / SUMMARY, summary)
    return summary


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The finished analysis in ``folder``, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") == "ok" else None
