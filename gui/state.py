"""Qt-free state the views subscribe to: the viewport, the heatmap overlay, analysis progress."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from engine.regions import Region, find_regions
from engine.tiling import TileGrid

Listener = Callable[[str], None]

MAX_ZOOM = 4.0  # screen px per level-0 px: 4x oversampling of the scan is enough


class Observable:
    """Listeners are called with the name of what changed."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, what: str) -> None:
        for listener in list(self._listeners):
            listener(what)


@dataclass
class Viewport:
    """Which part of a slide is on screen: centre in level-0 pixels and zoom (screen px per l0 px)."""

    l0_size: tuple[int, int] = (1, 1)
    screen_size: tuple[int, int] = (1, 1)
    l0_cx: float = 0.5
    l0_cy: float = 0.5
    zoom: float = 1.0

    @property
    def fit_zoom(self) -> float:
        sw, sh = self.screen_size
        w, h = self.l0_size
        return max(1e-9, min(sw / max(w, 1), sh / max(h, 1)) * 0.95)

    @property
    def min_zoom(self) -> float:
        return min(self.fit_zoom * 0.5, MAX_ZOOM)

    def to_screen(self, l0_x: float, l0_y: float) -> tuple[float, float]:
        sw, sh = self.screen_size
        return (l0_x - self.l0_cx) * self.zoom + sw / 2, (l0_y - self.l0_cy) * self.zoom + sh / 2

    def to_l0(self, s_x: float, s_y: float) -> tuple[float, float]:
        sw, sh = self.screen_size
        return (s_x - sw / 2) / self.zoom + self.l0_cx, (s_y - sh / 2) / self.zoom + self.l0_cy

    def visible_l0_rect(self) -> tuple[float, float, float, float]:
        """(x, y, w, h) of the screen in level-0 pixels."""
        x0, y0 = self.to_l0(0, 0)
        sw, sh = self.screen_size
        return x0, y0, sw / self.zoom, sh / self.zoom

    def fit(self) -> None:
        self.zoom = self.fit_zoom
        self.l0_cx, self.l0_cy = self.l0_size[0] / 2, self.l0_size[1] / 2

    def clamp(self) -> None:
        """Keep the zoom in range and the slide's centre region on screen."""
        self.zoom = min(max(self.zoom, self.min_zoom), MAX_ZOOM)
        w, h = self.l0_size
        self.l0_cx = min(max(self.l0_cx, 0.0), float(w))
        self.l0_cy = min(max(self.l0_cy, 0.0), float(h))

    def zoom_at(self, factor: float, s_x: float, s_y: float) -> None:
        """Zoom by ``factor`` keeping the slide point under screen point (s_x, s_y) in place."""
        l0_x, l0_y = self.to_l0(s_x, s_y)
        self.zoom = min(max(self.zoom * factor, self.min_zoom), MAX_ZOOM)
        sw, sh = self.screen_size
        self.l0_cx = l0_x - (s_x - sw / 2) / self.zoom
        self.l0_cy = l0_y - (s_y - sh / 2) / self.zoom
        self.clamp()

    def pan(self, d_sx: float, d_sy: float) -> None:
        """Move the slide by a screen-pixel drag."""
        self.l0_cx -= d_sx / self.zoom
        self.l0_cy -= d_sy / self.zoom
        self.clamp()

    def centre_on(self, l0_x: float, l0_y: float, zoom: float | None = None) -> None:
        self.l0_cx, self.l0_cy = l0_x, l0_y
        if zoom is not None:
            self.zoom = zoom
        self.clamp()

    def show_l0_box(
        self,
        box: tuple[float, float, float, float],
        margin: float = 1.6,
        max_zoom: float = MAX_ZOOM,
    ) -> None:
        """Centre on a level-0 box (x0, y0, x1, y1), zoomed so it spans 1/``margin`` of the
        screen, but no closer than ``max_zoom``."""
        x0, y0, x1, y1 = box
        sw, sh = self.screen_size
        zoom = min(sw / max(x1 - x0, 1.0), sh / max(y1 - y0, 1.0)) / margin
        zoom = min(zoom, max_zoom)
        self.centre_on((x0 + x1) / 2, (y0 + y1) / 2, zoom)


OUTLINED_AT_LOW_ZOOM = 5
LOW_ZOOM_FACTOR = 4.0


def outlined_regions(n_regions: int, zoom: float, fit_zoom: float, selected: int | None) -> list[int]:
    """Which regions the viewer outlines: at low zoom (under ``LOW_ZOOM_FACTOR`` times the fit
    zoom) only the top ``OUTLINED_AT_LOW_ZOOM`` (regions are sorted most suspicious first) and
    the selected one, so the whole-slide view is not a net of small outlines; closer, all."""
    if zoom >= LOW_ZOOM_FACTOR * fit_zoom:
        return list(range(n_regions))
    shown = list(range(min(n_regions, OUTLINED_AT_LOW_ZOOM)))
    if selected is not None and OUTLINED_AT_LOW_ZOOM <= selected < n_regions:
        shown.append(selected)
    return shown


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far; None until there is a rate."""
    if done <= 0 or total <= 0 or elapsed_s <= 0:
        return None
    return max(0.0, (total - done) * elapsed_s / done)


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


@dataclass(eq=False)
class OverlayState(Observable):
    """The heatmap over the slide: probabilities per grid cell, how they are shown, the regions.

    Events: ``"probs"`` (grid or values), ``"style"`` (opacity, visibility), ``"threshold"``,
    ``"regions"``, ``"selected"``.
    """

    grid: TileGrid | None = None
    probs: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    opacity: float = 0.8
    threshold: float = 0.5  # heatmap display threshold: tiles below it are not coloured
    visible: bool = True
    tile_threshold: float = 0.5
    cell_mm2: float = 0.0
    regions: list[Region] = field(default_factory=list)
    selected: int | None = None

    def __post_init__(self) -> None:
        Observable.__init__(self)

    @property
    def has_heatmap(self) -> bool:
        return self.grid is not None

    def clear(self) -> None:
        self.grid = None
        self.probs = np.zeros((0, 0), np.float32)
        self.regions = []
        self.selected = None
        self._emit("probs")
        self._emit("regions")

    def start(self, grid: TileGrid, tile_threshold: float, cell_mm2: float) -> None:
        """An empty grid for a running analysis."""
        self.grid = grid
        self.probs = np.full((grid.t_rows, grid.t_cols), np.nan, dtype=np.float32)
        self.tile_threshold = tile_threshold
        self.cell_mm2 = cell_mm2
        self.regions = []
        self.selected = None
        self._emit("probs")
        self._emit("regions")

    def add_tiles(
        self, t_cols: NDArray[np.int64], t_rows: NDArray[np.int64], probs: NDArray[np.float32]
    ) -> None:
        if self.grid is None:
            return
        self.probs[t_rows, t_cols] = probs
        self._emit("probs")

    def set_result(
        self,
        grid: TileGrid,
        probs: NDArray[np.float32],
        tile_threshold: float,
        cell_mm2: float,
        regions: list[Region] | None = None,
    ) -> None:
        """A finished analysis: the full grid and, when known, its regions at :attr:`region_cut`."""
        self.grid = grid
        self.probs = probs.astype(np.float32, copy=True)
        self.tile_threshold = tile_threshold
        self.cell_mm2 = cell_mm2
        self._emit("probs")
        self.set_regions(regions if regions is not None else [])

    @property
    def region_cut(self) -> float:
        """Regions are cells at or above the larger of the tile and display thresholds."""
        return max(self.tile_threshold, self.threshold)

    def compute_regions(self) -> list[Region]:
        """Regions of the current probabilities (slow on big grids: call it off the UI thread
        with a copy, or use :meth:`update_regions` in tests and small cases)."""
        if self.grid is None:
            return []
        return find_regions(self.probs, self.grid, self.region_cut, self.cell_mm2)

    def update_regions(self) -> None:
        self.set_regions(self.compute_regions())

    def set_regions(self, regions: list[Region]) -> None:
        self.regions = regions
        self.selected = None
        self._emit("regions")

    def set_opacity(self, opacity: float) -> None:
        self.opacity = min(max(opacity, 0.0), 1.0)
        self._emit("style")

    def set_visible(self, visible: bool) -> None:
        self.visible = visible
        self._emit("style")

    def set_threshold(self, threshold: float) -> None:
        self.threshold = min(max(threshold, 0.0), 1.0)
        self._emit("threshold")

    def select(self, index: int | None) -> None:
        self.selected = index
        self._emit("selected")

    def shown_probs(self) -> NDArray[np.float32]:
        """Probabilities as displayed: NaN below the display threshold."""
        if self.threshold <= 0:
            return self.probs
        return np.where(self.probs >= self.threshold, self.probs, np.nan).astype(np.float32)

    def l0_extent(self) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) in level-0 pixels covered by the grid's cells."""
        if self.grid is None:
            return None
        x0, y0 = self.grid.l0_cell_corner(0, 0)
        x1, y1 = self.grid.l0_cell_corner(self.grid.t_cols, self.grid.t_rows)
        return x0, y0, x1, y1
