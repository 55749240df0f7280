"""Viewer tiles read from the slide in a thread pool into a bounded LRU cache.

Requests carry the slide's token; tiles of a slide that is no longer shown, or that scrolled
out of view before a worker got to them, are dropped without being read.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from numpy.typing import NDArray
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from engine.errors import EquiTriageError
from engine.slide import Slide
from gui.tile_cache import TILE_PX, TileCache, TileKey, tile_spec

log = logging.getLogger(__name__)

CACHE_BYTES = 192 * 1024 * 1024


def rgb_to_qimage(pixels: NDArray[np.uint8]) -> QImage:
    """A deep-copied 32-bit QImage of an RGB array (safe to hand to another thread)."""
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    image = QImage(pixels.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return image.convertToFormat(QImage.Format.Format_RGB32)


def rgba_to_qimage(pixels: NDArray[np.uint8]) -> QImage:
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    return QImage(pixels.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


class _Signals(QObject):
    ready = Signal(int, object, QImage)  # token, key, image
    failed = Signal(int, object, str)  # token, key, message


class _TileJob(QRunnable):
    def __init__(self, loader: TileLoader, token: int, key: TileKey, slide: Slide) -> None:
        super().__init__()
        self._loader = loader
        self._token = token
        self._key = key
        self._slide = slide

    def run(self) -> None:
        self._loader._read(self._token, self._key, self._slide)


class TileLoader(QObject):
    """Reads requested tiles in the background; ``tile_ready`` fires once a tile is cached."""

    tile_ready = Signal(object)  # key
    failed = Signal(str)

    def __init__(
        self, parent: QObject | None = None, threads: int = 2, cache_bytes: int = CACHE_BYTES
    ) -> None:
        super().__init__(parent)
        self.cache: TileCache[QImage] = TileCache(cache_bytes, lambda im: int(im.sizeInBytes()))
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._signals = _Signals(self)
        self._signals.ready.connect(self._on_ready)
        self._signals.failed.connect(self._on_failed)
        self._lock = threading.Lock()
        self._slide: Slide | None = None
        self._token = 0
        self._wanted: set[TileKey] = set()
        self._in_flight: set[TileKey] = set()
        self._bad: set[TileKey] = set()
        self._failed_token = -1
        self.reads = 0
        self.dropped = 0

    @property
    def slide(self) -> Slide | None:
        return self._slide

    def set_slide(self, slide: Slide | None) -> None:
        """Show another slide (or none): forget every tile and pending request of the last one."""
        with self._lock:
            self._token += 1
            self._wanted.clear()
            self._in_flight.clear()
            self._bad.clear()
            self._slide = slide
        self.cache.clear()

    def wait(self, msecs: int = 5000) -> None:
        """Let running reads finish (before closing a slide they use)."""
        self._pool.waitForDone(msecs)

    def request(self, keys: list[TileKey]) -> None:
        """Make ``keys`` (most wanted first) the tiles to read; earlier, unstarted requests lapse."""
        slide = self._slide
        if slide is None:
            return
        with self._lock:
            self._wanted = set(keys)
            todo = [
                k for k in keys if k not in self.cache and k not in self._in_flight and k not in self._bad
            ]
            self._in_flight.update(todo)
            token = self._token
        for key in todo:
            self._pool.start(_TileJob(self, token, key, slide))

    def pending(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _read(self, token: int, key: TileKey, slide: Slide) -> None:
        with self._lock:
            if token != self._token or key not in self._wanted:
                self._in_flight.discard(key)
                self.dropped += 1
                return
        spec = tile_spec(key, slide.level_dimensions, slide.level_downsamples, TILE_PX)
        try:
            if spec.lvl_w <= 0 or spec.lvl_h <= 0:
                raise ValueError(f"tile {key} lies outside the slide")
            pixels = slide.read_region((round(spec.l0_x), round(spec.l0_y)), key[0], (spec.lvl_w, spec.lvl_h))
            image = rgb_to_qimage(pixels)
        except Exception as exc:  # a damaged or vanished file must not kill the worker
            log.warning("tile %s: %s", key, exc)
            # The window words its own advice (was the file moved?): pass on only what went wrong.
            problem = exc.problem if isinstance(exc, EquiTriageError) else str(exc)
            self._signals.failed.emit(token, key, problem)
            return
        self.reads += 1
        self._signals.ready.emit(token, key, image)

    def _on_ready(self, token: int, key: TileKey, image: QImage) -> None:
        with self._lock:
            if token != self._token:
                return
            self._in_flight.discard(key)
        self.cache.put(key, image)
        self.tile_ready.emit(key)

    def _on_failed(self, token: int, key: TileKey, message: str) -> None:
        with self._lock:
            if token != self._token:
                return
            self._in_flight.discard(key)
            self._bad.add(key)
            first = self._failed_token != token
            self._failed_token = token
        if first:
            self.failed.emit(message)
