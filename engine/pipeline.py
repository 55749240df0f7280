"""Analyse one slide: tissue detection, tiling at the model's resolution, reading, inference.

Reading runs in a small thread pool (OpenSlide releases the GIL) at most ``queue_depth`` batches
ahead of inference, so memory stays flat on any slide size and reading hides behind the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.contract import ModelContract
from engine.errors import CancelledError, SlideTooCoarseError, SlideTooSmallError
from engine.model import Model
from engine.ood import TILE_STATS, OodVerdict, judge_ood, tile_colour
from engine.preprocess import prepare
from engine.slide import Slide
from engine.tiling import TileGrid, choose_level, lvl_read_size, plan_grid, tissue_fractions
from engine.tissue import detect_tissue
from engine.triage import SlideVerdict, judge

log = logging.getLogger(__name__)

# Thumbnail pixels per tile side used for tissue detection; the thumbnail (also the overlay's
# background) is at least THUMB_MIN_SIDE on its longer side so the overlay is readable.
THUMB_PX_PER_TILE = 8
THUMB_MIN_SIDE = 1024
THUMB_MAX_SIDE = 4096
# A slide at most this many times coarser than the model's µm/px is analysed (tiles enlarged up to
# 2x); beyond it the µm/px is almost surely wrong (e.g. 20 typed for a 20x scan) and the grid huge.
MAX_ENLARGEMENT = 2.0


@dataclass(frozen=True)
class AnalysisParams:
    """What the user can set; everything else comes from the model's contract."""

    stride_px: int | None = None
    min_tissue_fraction: float = 0.25
    batch_size: int = 64
    read_threads: int = 2
    queue_depth: int = 4

    def as_dict(self, input_px: int) -> dict[str, float | int]:
        return {
            "stride_px": self.stride_px or input_px,
            "min_tissue_fraction": self.min_tissue_fraction,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class TileBatch:
    """Probabilities of some tiles, reported while the analysis runs."""

    t_cols: NDArray[np.int64]
    t_rows: NDArray[np.int64]
    probs: NDArray[np.float32]


@dataclass(frozen=True)
class TilePlan:
    """Which tiles of a slide the model will see, and where and how they are read."""

    mpp: float
    grid: TileGrid
    thumbnail: NDArray[np.uint8]
    thumb_downsample: float
    tissue_mask: NDArray[np.bool_]
    fractions: NDArray[np.float32]
    t_cols: NDArray[np.int64]
    t_rows: NDArray[np.int64]
    level: int
    read_side: int

    @property
    def l0_boxes(self) -> NDArray[np.int64]:
        return self.grid.l0_boxes(self.t_cols, self.t_rows)

    @property
    def tile_fractions(self) -> NDArray[np.float32]:
        return self.fractions[self.t_rows, self.t_cols]


@dataclass
class SlideAnalysis:
    """Everything one analysis produced; the writers in ``outputs`` turn it into files."""

    slide_info: dict[str, object]
    plan: TilePlan
    probs: NDArray[np.float32]
    verdict: SlideVerdict
    timings_s: dict[str, float] = field(default_factory=dict)
    ood: OodVerdict | None = None
    colour_distances: NDArray[np.float64] | None = None
    feature_distances: NDArray[np.float64] | None = None

    def prob_grid(self) -> NDArray[np.float32]:
        """t_rows x t_cols probabilities, NaN where no tile was analysed."""
        return prob_grid(self.plan.grid, self.plan.t_cols, self.plan.t_rows, self.probs)


def prob_grid(
    grid: TileGrid, t_cols: NDArray[np.int64], t_rows: NDArray[np.int64], probs: NDArray[np.float32]
) -> NDArray[np.float32]:
    out = np.full((grid.t_rows, grid.t_cols), np.nan, dtype=np.float32)
    out[t_rows, t_cols] = probs
    return out


def plan_tiles(slide: Slide, contract: ModelContract, params: AnalysisParams) -> TilePlan:
    """Grid at the model's resolution, tissue detection on a thumbnail, level to read from."""
    mpp = slide.require_mpp()
    grid = plan_grid(slide.dimensions, mpp, contract.mpp, contract.input_size, params.stride_px)
    thumb_side = max(slide.dimensions) * THUMB_PX_PER_TILE / grid.l0_tile_px
    thumb_side = min(max(thumb_side, THUMB_MIN_SIDE), THUMB_MAX_SIDE, max(slide.dimensions))
    # Read first: a damaged file says so, even when it is also too small.
    thumbnail, thumb_ds = slide.thumbnail(int(thumb_side))
    if grid.count == 0:
        w, h = slide.dimensions
        raise SlideTooSmallError(
            f"{slide.name}: {w} x {h} px at {mpp:.3f} µm/px is smaller than one model patch "
            f"({grid.l0_tile_px:.0f} px), nothing to analyse"
        )
    if mpp > contract.mpp * MAX_ENLARGEMENT:
        raise SlideTooCoarseError(
            f"{slide.name}: {mpp:g} µm/px is too coarse for the model, which reads {contract.mpp:g} "
            f"µm/px (at most {MAX_ENLARGEMENT:g} times coarser): each tile would be enlarged "
            f"{mpp / contract.mpp:.1f}-fold"
        )
    tissue = detect_tissue(thumbnail)
    fractions = tissue_fractions(tissue, thumb_ds, grid)
    t_rows, t_cols = np.nonzero(fractions >= params.min_tissue_fraction)
    level = choose_level(slide.level_downsamples, grid.l0_tile_px / grid.input_px)
    return TilePlan(
        mpp=mpp,
        grid=grid,
        thumbnail=thumbnail,
        thumb_downsample=thumb_ds,
        tissue_mask=tissue,
        fractions=fractions,
        t_cols=t_cols.astype(np.int64),
        t_rows=t_rows.astype(np.int64),
        level=level,
        read_side=lvl_read_size(grid, slide.level_downsamples[level]),
    )


ProgressFn = Callable[[int, int], None]
BatchFn = Callable[[TileBatch], None]
PlanFn = Callable[[TilePlan], None]


def analyse_slide(
    slide: Slide,
    model: Model,
    params: AnalysisParams | None = None,
    progress: ProgressFn | None = None,
    on_batch: BatchFn | None = None,
    cancel: threading.Event | None = None,
    *,
    on_plan: PlanFn | None = None,
) -> SlideAnalysis:
    """Run the model over every tissue tile of ``slide``.

    ``on_plan(plan)`` is called once the tiles are chosen (grid and tissue found), then
    ``progress(done, total)`` and ``on_batch`` after each batch, all from this thread; setting
    ``cancel`` stops at the next batch with :class:`CancelledError`. Whatever way this returns or
    raises, every reader thread has stopped by then, so the slide may be closed.
    """
    params = params or AnalysisParams()
    contract = model.contract
    t_start = time.perf_counter()
    plan = plan_tiles(slide, contract, params)
    if cancel is not None and cancel.is_set():
        raise CancelledError("analysis cancelled")
    if on_plan:
        on_plan(plan)
    grid, level, t_cols, t_rows = plan.grid, plan.level, plan.t_cols, plan.t_rows
    t_tissue = time.perf_counter()
    log.info(
        "%s: %d x %d grid, %d tissue tiles, reading level %d",
        slide.name,
        grid.t_cols,
        grid.t_rows,
        len(t_cols),
        level,
    )

    probs = np.empty(len(t_cols), dtype=np.float32)
    colour = np.full((len(t_cols), len(TILE_STATS)), np.nan, dtype=np.float32)
    fstats = contract.feature_stats
    feat_dist = None if fstats is None else np.full(len(t_cols), np.nan, dtype=np.float64)
    done = 0
    if progress:
        progress(0, len(t_cols))
    infer_s = 0.0
    batches = _read_batches(
        slide,
        plan.l0_boxes,
        level,
        plan.read_side,
        grid.input_px,
        params,
        cancel,
        lambda p: (prepare(p, contract), tile_colour(p)),
    )
    try:
        for start, (inputs, batch_colour) in batches:
            t0 = time.perf_counter()
            batch_probs, features = model.infer_prepared(inputs)
            infer_s += time.perf_counter() - t0
            stop = start + len(batch_probs)
            probs[start:stop] = batch_probs
            colour[start:stop] = batch_colour
            if feat_dist is not None and fstats is not None and features is not None:
                feat_dist[start:stop] = fstats.distance(features)
            done += len(batch_probs)
            if on_batch:
                on_batch(TileBatch(t_cols[start:stop], t_rows[start:stop], batch_probs))
            if progress:
                progress(done, len(t_cols))
    finally:
        batches.close()  # readers stop and are joined before the caller may close the slide
    t_end = time.perf_counter()
    verdict = judge(
        prob_grid(grid, t_cols, t_rows, probs), contract.triage, cell_mm2=grid.cell_mm2(contract.mpp)
    )
    colour_dist = contract.ood.colour.distance(colour)
    return SlideAnalysis(
        slide_info=slide.describe(),
        plan=plan,
        probs=probs,
        verdict=verdict,
        timings_s={
            "tissue": round(t_tissue - t_start, 3),
            "tiles": round(t_end - t_tissue, 3),
            "inference": round(infer_s, 3),
            "total": round(t_end - t_start, 3),
        },
        ood=judge_ood(colour_dist, feat_dist, contract.ood),
        colour_distances=colour_dist,
        feature_distances=feat_dist,
    )


def _read_batches(
    slide: Slide,
    l0_boxes: NDArray[np.int64],
    level: int,
    read_side: int,
    input_px: int,
    params: AnalysisParams,
    cancel: threading.Event | None,
    transform: Callable[[NDArray[np.uint8]], Any] | None = None,
) -> Generator[tuple[int, Any], None, None]:
    """Yield (first index, patches) per batch, in order, reading ahead in a thread pool.

    ``transform`` (the model's preprocessing, and the tiles' colour for the out-of-distribution
    check) runs in the reader threads too, so the calling thread only runs the model. When the
    generator is closed (finished, failed or cancelled), the readers stop at their next tile and
    are joined before it returns.
    """
    stop = threading.Event()

    def read(start: int) -> Any:
        chunk = l0_boxes[start : start + params.batch_size]
        out = np.empty((len(chunk), input_px, input_px, 3), dtype=np.uint8)
        for i, (x0, y0, _, _) in enumerate(chunk):
            if stop.is_set() or (cancel is not None and cancel.is_set()):
                break
            pixels = slide.read_region((int(x0), int(y0)), level, (read_side, read_side))
            out[i] = resize_patch(pixels, input_px)
        return transform(out) if transform else out

    starts = range(0, len(l0_boxes), params.batch_size)
    pool = ThreadPoolExecutor(max_workers=max(1, params.read_threads), thread_name_prefix="read")
    pending: deque[tuple[int, Future[Any]]] = deque()
    try:
        for start in starts:
            pending.append((start, pool.submit(read, start)))
            if len(pending) >= params.queue_depth:
                yield _next_ready(pending, cancel)
        while pending:
            yield _next_ready(pending, cancel)
    finally:
        stop.set()
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _next_ready(pending: deque[tuple[int, Future[Any]]], cancel: threading.Event | None) -> tuple[int, Any]:
    if cancel is not None and cancel.is_set():
        raise CancelledError("analysis cancelled")
    start, fut = pending.popleft()
    patches = fut.result()
    if cancel is not None and cancel.is_set():
        raise CancelledError("analysis cancelled")
    return start, patches


def resize_patch(pixels: NDArray[np.uint8], input_px: int) -> NDArray[np.uint8]:
    """Resample a read region to the model's patch size (antialiased when shrinking)."""
    if pixels.shape[0] == input_px and pixels.shape[1] == input_px:
        return pixels
    img = Image.fromarray(pixels).resize((input_px, input_px), Image.Resampling.BILINEAR)
    return np.asarray(img)
