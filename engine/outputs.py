"""Per-slide result files, each written atomically; ``summary.json`` last, as the completion mark.

A folder holding ``summary.json`` is a finished analysis. Temporary files are hidden
(``.name.tmp-PID-RANDOM``) and never look like results, so a crash or Ctrl-C leaves nothing half-written
that could pass for whole.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine import __version__
from engine.caveats import caption
from engine.errors import OutputError, Remedy
from engine.heatmap import heatmap_image, overlay_image
from engine.model import Model
from engine.pipeline import AnalysisParams, SlideAnalysis
from engine.regions import Region, find_regions, regions_geojson
from engine.summary import (
    SUMMARY_FORMAT,
    InputIdentity,
    ModelInfo,
    SlideSummary,
    Thresholds,
    TileCounts,
    Verdict,
)

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
TILES = "tiles.csv"
HEATMAP = "heatmap.png"
OVERLAY = "overlay.png"
REGIONS = "regions.geojson"
TISSUE = "tissue.png"
__all__ = ["SUMMARY", "SUMMARY_FORMAT", "TILES", "read_summary", "write_results"]
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def output_error(path: Path, exc: OSError) -> OutputError:
    """One clear error for a failed write: disk full, folder gone, or not allowed."""
    if exc.errno in _NO_SPACE:
        return OutputError(
            f"cannot write {path}: no space left (or file size limit reached)", Remedy.FREE_DISK_SPACE
        )
    if exc.errno == errno.ENOENT:
        return OutputError(f"cannot write {path}: the output folder was removed")
    return OutputError(f"cannot write {path} ({exc.strerror or exc})")


def _stage(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path``'s new content beside it under a temporary name (on disk, synced); return it."""
    # Unique per write: two threads, or two machines whose processes share a pid, may be writing
    # the same file of a shared output folder (summary.csv) at once.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        _discard(tmp)
        raise output_error(path, exc) from exc
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = _stage(path, write)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise output_error(path, exc) from exc


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _bytes_writer(data: bytes) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return write


def _png_writer(image: Image.Image) -> Callable[[Path], None]:
    return lambda tmp: image.save(tmp, format="PNG", optimize=False)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic(path, _bytes_writer(data))


def utf8(text: str) -> bytes:
    """``text`` as UTF-8. A file name that is not UTF-8 on disk reaches Python with its odd bytes
    as lone surrogates, which UTF-8 cannot hold: those bytes are written as U+FFFD instead."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, utf8(text))


def json_bytes(data: Any) -> bytes:
    """JSON in UTF-8; where a string holds a lone surrogate (a non-UTF-8 file name), every
    non-ASCII character is escaped instead, so the very same string is read back."""
    try:
        return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(data, indent=2) + "\n").encode("ascii")


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, json_bytes(data))


def save_image_atomic(path: Path, image: Image.Image) -> None:
    _atomic(path, _png_writer(image))


def prepare_dir(folder: Path) -> None:
    """Create ``folder`` (in an output folder that exists) and drop stale temporary files."""
    try:
        folder.mkdir(exist_ok=True)
        for stale in folder.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
    except OSError as exc:
        raise output_error(folder / SUMMARY, exc) from exc


def _replace_all(folder: Path, files: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write ``files`` into ``folder`` as one result: all of them are staged first, so a failure
    (a full disk) leaves the old result whole; then the old completion mark goes, the files
    replace the old ones, and the last of them (``summary.json``) marks the new result complete.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in files:
            staged.append((_stage(path, write), path))
        try:
            (folder / SUMMARY).unlink(missing_ok=True)
            for tmp, path in staged:
                os.replace(tmp, path)
        except OSError as exc:
            raise output_error(folder / SUMMARY, exc) from exc
    finally:
        for tmp, _ in staged:
            _discard(tmp)  # a no-op for those already in place


def check_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise output_error(folder / ".write-test", exc) from exc


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
    identity: InputIdentity | None,
) -> SlideSummary:
    contract = model.contract
    grid = analysis.plan.grid
    v = analysis.verdict
    return SlideSummary(
        format_version=SUMMARY_FORMAT,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        engine_version=__version__,
        input=identity,
        slide={**analysis.slide_info, "mpp_used": analysis.plan.mpp},
        model=ModelInfo(
            version=contract.model_version,
            path=str(model.path),
            sha256=model.sha256,
            input_px=contract.input_size,
            mpp=contract.mpp,
        ),
        parameters={**params.as_dict(contract.input_size), "read_level": analysis.plan.level},
        thresholds=Thresholds.from_policy(contract.triage),
        tiles=TileCounts(
            grid_cols=grid.t_cols,
            grid_rows=grid.t_rows,
            grid_total=grid.count,
            tissue=len(analysis.plan.t_cols),
            analysed=v.tiles_analysed,
            positive=v.tiles_positive,
            l0_tile_px=round(grid.l0_tile_px, 3),
            l0_stride_px=round(grid.l0_stride_px, 3),
        ),
        verdict=Verdict(
            score=v.score,
            category=v.category,
            tumour_area_mm2=v.tumour_area_mm2,
            regions=len(regions),
            score_method=v.score_method,
            largest_region_mm2=v.largest_region_mm2,
        ),
        out_of_distribution=None if analysis.ood is None else analysis.ood.out_of_distribution,
        ood=None if analysis.ood is None else analysis.ood.as_dict(),
        heatmap_px_per_cell=heatmap_scale,
        timings_s={
            **analysis.timings_s,
            "tiles_per_s": round(v.tiles_analysed / max(analysis.timings_s.get("tiles", 0), 1e-9), 1),
        },
        outputs=[TILES, HEATMAP, OVERLAY, TISSUE, REGIONS],
    )


def write_results(
    folder: Path,
    analysis: SlideAnalysis,
    model: Model,
    params: AnalysisParams,
    identity: InputIdentity | None = None,
) -> SlideSummary:
    """Write every result file of one slide into ``folder``; return the summary written.

    ``identity`` ties the result to its input (see :func:`engine.identity.input_identity`);
    without it the result is never reused by a resumed run.
    """
    prepare_dir(folder)
    contract = model.contract
    grid_probs = analysis.prob_grid()
    cell_mm2 = analysis.plan.grid.cell_mm2(contract.mpp)
    regions = find_regions(grid_probs, analysis.plan.grid, contract.triage.tile_threshold, cell_mm2)
    heat, scale = heatmap_image(grid_probs, floor=contract.triage.tile_threshold)
    summary = build_summary(analysis, model, params, regions, scale, identity)  # written last
    overlay = overlay_image(
        analysis.plan.thumbnail,
        analysis.plan.thumb_downsample,
        analysis.plan.grid,
        grid_probs,
        caption=caption(summary),
        threshold=contract.triage.tile_threshold,
    )
    tissue = Image.fromarray(analysis.plan.tissue_mask.astype(np.uint8) * 255)
    _replace_all(
        folder,
        [
            (folder / TILES, _bytes_writer(utf8(tiles_csv(analysis)))),
            (folder / HEATMAP, _png_writer(heat)),
            (folder / OVERLAY, _png_writer(overlay)),
            (folder / TISSUE, _png_writer(tissue)),
            (folder / REGIONS, _bytes_writer(json_bytes(regions_geojson(regions, contract.model_version)))),
            (folder / SUMMARY, _bytes_writer(json_bytes(summary.to_json()))),
        ],
    )
    return summary


def read_summary(folder: Path) -> SlideSummary | None:
    """The finished analysis in ``folder``, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
        return SlideSummary.from_json(data)
    except (OSError, ValueError) as exc:  # SummaryFormatError is a ValueError
        if not isinstance(exc, FileNotFoundError):
            log.debug("%s: no readable summary (%s)", folder, exc)
        return None
