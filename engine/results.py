"""Read a finished analysis back from its result folder (``summary.json`` + ``tiles.csv``).

The viewer uses this to show a slide's heatmap and regions without re-running the model.
Tile indices are recovered from the level-0 boxes the pipeline wrote (``x0 = rint(t_col *
l0_stride_px)``), so the grid and the probabilities are exactly those of the original run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine.contract import TriagePolicy
from engine.errors import ResultsError
from engine.outputs import TILES, read_summary
from engine.pipeline import prob_grid
from engine.regions import Region, find_regions
from engine.summary import SlideSummary
from engine.tiling import TileGrid


@dataclass(frozen=True)
class SavedAnalysis:
    """A finished analysis as stored on disk: summary, grid and per-tile probabilities."""

    folder: Path
    summary: SlideSummary
    grid: TileGrid
    t_cols: NDArray[np.int64]
    t_rows: NDArray[np.int64]
    probs: NDArray[np.float32]

    @property
    def score(self) -> float | None:
        return self.summary.score

    @property
    def category(self) -> str:
        return self.summary.category

    @property
    def model_version(self) -> str:
        return self.summary.model.version

    @property
    def model_sha256(self) -> str:
        return self.summary.model.sha256

    @property
    def model_mpp(self) -> float:
        return self.summary.model.mpp

    @property
    def policy(self) -> TriagePolicy:
        """The triage thresholds the analysis was judged with."""
        return self.summary.thresholds.policy()

    @property
    def cell_mm2(self) -> float:
        """Area one grid cell stands for, as the pipeline computed it."""
        return self.grid.cell_mm2(self.model_mpp)

    def prob_grid(self) -> NDArray[np.float32]:
        """t_rows x t_cols probabilities, NaN where no tile was analysed."""
        return prob_grid(self.grid, self.t_cols, self.t_rows, self.probs)

    def regions(self, threshold: float | None = None) -> list[Region]:
        """Suspicious regions at ``threshold`` (default: the model's tile threshold)."""
        cut = self.policy.tile_threshold if threshold is None else threshold
        return find_regions(self.prob_grid(), self.grid, cut, self.cell_mm2)


def grid_from_summary(summary: SlideSummary) -> TileGrid:
    """The tile grid an analysis used, from its summary."""
    try:
        return TileGrid(
            l0_tile_px=float(summary.tiles.l0_tile_px),
            l0_stride_px=float(summary.tiles.l0_stride_px),
            t_cols=int(summary.tiles.grid_cols),
            t_rows=int(summary.tiles.grid_rows),
            input_px=int(summary.model.input_px),
            stride_px=int(summary.parameters["stride_px"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultsError(f"summary.json lacks the tile grid ({exc})") from exc


def load_saved(folder: Path, tries: int = 3) -> SavedAnalysis | None:
    """The finished analysis in ``folder``; None if there is none. Raises ResultsError if damaged.

    ``summary.json`` is read again after the tiles: if another run replaced the result meanwhile,
    the tiles may be the new run's, so it is read again (up to ``tries`` times), never mixed.
    """
    for _ in range(tries):
        summary = read_summary(folder)
        if summary is None:
            return None
        try:
            saved = _with_tiles(folder, summary)
        except ResultsError:
            if read_summary(folder) == summary:
                raise  # the result did not change: it is damaged
            continue  # the tiles were a newer result's
        if read_summary(folder) == summary:
            return saved
    raise ResultsError(f"{folder.name}: being rewritten by another run; open it again when that is done")


def _with_tiles(folder: Path, summary: SlideSummary) -> SavedAnalysis:
    grid = grid_from_summary(summary)
    xs: list[int] = []
    ys: list[int] = []
    ps: list[float] = []
    try:
        with (folder / TILES).open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                xs.append(int(row["x0"]))
                ys.append(int(row["y0"]))
                ps.append(float(row["prob"]))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ResultsError(f"{folder / TILES}: cannot be read back ({exc})") from exc
    stride = grid.l0_stride_px if grid.l0_stride_px > 0 else 1.0
    t_cols = np.rint(np.asarray(xs, dtype=np.float64) / stride).astype(np.int64)
    t_rows = np.rint(np.asarray(ys, dtype=np.float64) / stride).astype(np.int64)
    inside = (t_cols >= 0) & (t_cols < grid.t_cols) & (t_rows >= 0) & (t_rows < grid.t_rows)
    if not bool(inside.all()):
        raise ResultsError(f"{folder / TILES}: tiles lie outside the grid")
    return SavedAnalysis(
        folder=folder,
        summary=summary,
        grid=grid,
        t_cols=t_cols,
        t_rows=t_rows,
        probs=np.asarray(ps, dtype=np.float32),
    )
