"""Suspicious regions: connected groups of tiles above threshold, as polygons in level-0 pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.tiling import TileGrid

Vertex = tuple[int, int]


@dataclass(frozen=True)
class Region:
    """One region: grid cells, level-0 polygon rings (exterior first) and measurements."""

    cells: tuple[tuple[int, int], ...]  # (t_row, t_col)
    rings: tuple[tuple[tuple[float, float], ...], ...]
    max_prob: float
    mean_prob: float
    area_mm2: float
    l0_centroid: tuple[float, float]
    l0_bbox: tuple[float, float, float, float]  # x0, y0, x1, y1


def label_components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    """4-connected component labels (1..n, 0 = background) of a small boolean grid."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    n = 0
    rows, cols = mask.shape
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if labels[r0, c0]:
            continue
        n += 1
        labels[r0, c0] = n
        stack = [(int(r0), int(c0))]
        while stack:
            r, c = stack.pop()
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < rows and 0 <= cc < cols and mask[rr, cc] and not labels[rr, cc]:
                    labels[rr, cc] = n
                    stack.append((rr, cc))
    return labels, n


def cell_rings(cells: NDArray[np.bool_]) -> list[list[Vertex]]:
    """Closed outlines of a set of grid cells, in corner coordinates (col, row).

    Boundary edges are walked with the cells on the right-hand side; at a corner shared by two
    diagonal cells the walk turns right, so rings never cross. A walk that passes such a corner
    twice (a hole that meets the outside, or another hole, at one corner) is cut there into
    simple rings, which touch at that corner only, as valid polygons may (OGC, QuPath's JTS).
    Exterior rings run one way, holes the other (see :func:`signed_area`).
    """
    padded = np.pad(cells, 1)
    edges: dict[Vertex, list[Vertex]] = {}

    def add(a: Vertex, b: Vertex) -> None:
        edges.setdefault(a, []).append(b)

    for r, c in zip(*np.nonzero(cells), strict=True):
        pr, pc = r + 1, c + 1
        x, y = int(c), int(r)
        if not padded[pr - 1, pc]:
            add((x, y), (x + 1, y))  # top edge, left to right
        if not padded[pr, pc + 1]:
            add((x + 1, y), (x + 1, y + 1))  # right edge, downwards
        if not padded[pr + 1, pc]:
            add((x + 1, y + 1), (x, y + 1))  # bottom edge, right to left
        if not padded[pr, pc - 1]:
            add((x, y + 1), (x, y))  # left edge, upwards
    rings: list[list[Vertex]] = []
    while edges:
        start = next(iter(edges))
        ring = [start]
        prev, cur = start, _take(edges, start, None)
        while cur != start:
            ring.append(cur)
            nxt = _take(edges, cur, (cur[0] - prev[0], cur[1] - prev[1]))
            prev, cur = cur, nxt
        rings.extend(_simplify(simple) for simple in _simple_rings(ring))
    return rings


def _simple_rings(ring: list[Vertex]) -> list[list[Vertex]]:
    """``ring`` cut at every vertex it passes twice into rings that pass each vertex once."""
    out: list[list[Vertex]] = []
    path: list[Vertex] = []
    at: dict[Vertex, int] = {}
    for v in ring:
        i = at.get(v)
        if i is None:
            at[v] = len(path)
            path.append(v)
            continue
        out.append(path[i:])  # the loop from v back to v
        for u in path[i + 1 :]:
            del at[u]
        del path[i + 1 :]
    out.append(path)
    return out


def _take(edges: dict[Vertex, list[Vertex]], at: Vertex, heading: Vertex | None) -> Vertex:
    options = edges[at]
    choice = 0
    if heading is not None and len(options) > 1:
        # Prefer the right turn (heading rotated clockwise in image coordinates).
        right = (-heading[1], heading[0])
        for i, o in enumerate(options):
            if (o[0] - at[0], o[1] - at[1]) == right:
                choice = i
    nxt = options.pop(choice)
    if not options:
        del edges[at]
    return nxt


def _simplify(ring: list[Vertex]) -> list[Vertex]:
    """Drop vertices in the middle of straight runs."""
    out: list[Vertex] = []
    n = len(ring)
    for i, v in enumerate(ring):
        a, b = ring[i - 1], ring[(i + 1) % n]
        if (v[0] - a[0]) * (b[1] - v[1]) != (v[1] - a[1]) * (b[0] - v[0]):
            out.append(v)
    return out


def signed_area(ring: list[Vertex] | tuple[tuple[float, float], ...]) -> float:
    """Shoelace area; positive for the clockwise-on-screen exterior rings of :func:`cell_rings`."""
    s = 0.0
    for (x0, y0), (x1, y1) in zip(ring, [*ring[1:], ring[0]], strict=True):
        s += x0 * y1 - x1 * y0
    return s / 2


def find_regions(
    probs: NDArray[np.float32], grid: TileGrid, threshold: float, cell_mm2: float
) -> list[Region]:
    """Regions of cells with probability >= ``threshold``, most suspicious first."""
    mask = np.nan_to_num(probs, nan=0.0) >= threshold
    labels, n = label_components(mask)
    regions: list[Region] = []
    for k in range(1, n + 1):
        sel = labels == k
        rr, cc = np.nonzero(sel)
        p = probs[sel]
        rings = sorted(cell_rings(sel), key=lambda ring: -abs(signed_area(ring)))
        l0_rings = tuple(tuple(grid.l0_cell_corner(x, y) for x, y in ring) for ring in rings)
        cx, cy = grid.l0_cell_corner(cc.mean() + 0.5, rr.mean() + 0.5)
        x0, y0 = grid.l0_cell_corner(cc.min(), rr.min())
        x1, y1 = grid.l0_cell_corner(cc.max() + 1, rr.max() + 1)
        regions.append(
            Region(
                cells=tuple(zip(rr.tolist(), cc.tolist(), strict=True)),
                rings=l0_rings,
                max_prob=float(p.max()),
                mean_prob=float(p.mean()),
                area_mm2=float(len(p) * cell_mm2),
                l0_centroid=(float(cx), float(cy)),
                l0_bbox=(float(x0), float(y0), float(x1), float(y1)),
            )
        )
    regions.sort(key=lambda r: (-r.max_prob, -r.area_mm2))
    return regions


def regions_geojson(regions: list[Region], model_version: str) -> dict[str, Any]:
    """A FeatureCollection QuPath imports (File > Import objects) as classified annotations."""
    features = []
    for i, region in enumerate(regions, start=1):
        # GeoJSON wants closed rings; exterior first, then holes.
        coords = [[[round(x, 1), round(y, 1)] for x, y in (*ring, ring[0])] for ring in region.rings]
        features.append(
            {
                "type": "Feature",
                "id": f"region-{i}",
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {
                    "objectType": "annotation",
                    "name": f"Suspicious region {i}",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                    "isLocked": False,
                    "measurements": {
                        "max_probability": round(region.max_prob, 4),
                        "mean_probability": round(region.mean_prob, 4),
                        "area_mm2": round(region.area_mm2, 4),
                        "tiles": len(region.cells),
                    },
                    "model_version": model_version,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}
