"""Pure tile maths for the viewer and a bounded LRU cache of decoded tiles.

Planes: ``l0_`` level-0 pixels, ``lvl_`` pixels of a pyramid level, ``t_`` viewer-tile indices.
A viewer tile is ``tile_px`` x ``tile_px`` level pixels (smaller at the right and bottom edges).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

TILE_PX = 256

TileKey = tuple[int, int, int]  # (level, t_x, t_y)
V = TypeVar("V")


@dataclass(frozen=True)
class TileSpec:
    """Where one viewer tile lies: its level-pixel rectangle and its level-0 rectangle."""

    key: TileKey
    lvl_x: int
    lvl_y: int
    lvl_w: int
    lvl_h: int
    l0_x: float
    l0_y: float
    l0_w: float
    l0_h: float


def level_for_zoom(level_downsamples: Sequence[float], zoom: float) -> int:
    """The coarsest level still at least as detailed as the screen (``zoom`` = screen px per l0 px)."""
    wanted = 1.0 / max(zoom, 1e-12)
    best = 0
    for level, ds in enumerate(level_downsamples):
        if ds <= wanted * 1.0001:
            best = level
    return best


def tile_spec(
    key: TileKey,
    level_dimensions: Sequence[tuple[int, int]],
    level_downsamples: Sequence[float],
    tile_px: int = TILE_PX,
) -> TileSpec:
    """Geometry of viewer tile ``key``."""
    level, t_x, t_y = key
    lvl_w_total, lvl_h_total = level_dimensions[level]
    ds = level_downsamples[level]
    lvl_x, lvl_y = t_x * tile_px, t_y * tile_px
    lvl_w = max(0, min(tile_px, lvl_w_total - lvl_x))
    lvl_h = max(0, min(tile_px, lvl_h_total - lvl_y))
    return TileSpec(key, lvl_x, lvl_y, lvl_w, lvl_h, lvl_x * ds, lvl_y * ds, lvl_w * ds, lvl_h * ds)


def visible_tiles(
    l0_rect: tuple[float, float, float, float],
    level: int,
    level_dimensions: Sequence[tuple[int, int]],
    level_downsamples: Sequence[float],
    tile_px: int = TILE_PX,
) -> list[TileKey]:
    """Keys of the tiles of ``level`` that meet the level-0 rectangle (x, y, w, h), centre first."""
    x, y, w, h = l0_rect
    ds = level_downsamples[level]
    lvl_w, lvl_h = level_dimensions[level]
    n_x = math.ceil(lvl_w / tile_px)
    n_y = math.ceil(lvl_h / tile_px)
    tx0 = max(0, math.floor(x / ds / tile_px))
    ty0 = max(0, math.floor(y / ds / tile_px))
    tx1 = min(n_x - 1, math.floor((x + w) / ds / tile_px))
    ty1 = min(n_y - 1, math.floor((y + h) / ds / tile_px))
    if tx1 < tx0 or ty1 < ty0:
        return []
    cx, cy = (tx0 + tx1) / 2, (ty0 + ty1) / 2
    keys = [(level, tx, ty) for ty in range(ty0, ty1 + 1) for tx in range(tx0, tx1 + 1)]
    keys.sort(key=lambda k: (k[1] - cx) ** 2 + (k[2] - cy) ** 2)
    return keys


class TileCache(Generic[V]):
    """A thread-safe LRU cache bounded by total size (bytes, as ``size_of`` reports them)."""

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[TileKey, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: TileKey) -> V | None:
        """The tile, marked as most recently used; None if absent."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def peek(self, key: TileKey) -> V | None:
        """The tile without touching its recency."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: TileKey, value: V) -> None:
        """Store a tile, evicting the least recently used ones to stay within ``max_bytes``."""
        size = self._size_of(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __iter__(self) -> Iterator[TileKey]:
        """The keys, least recently used first (a snapshot)."""
        return iter(list(self._items))
