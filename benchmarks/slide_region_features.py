"""Is the slide score the limit, or the tile model? Region features beyond the shipped three.

The shipped aggregator scores each region from log(cells), mean probability and the 3x3
smoothed maximum (``engine.triage``). A weak micro-metastasis often shows two or three confident
tiles among missed ones, while chance clusters of false positives on a large negative slide are
mostly tiles of 0.5-0.8, so features that count *confident* tiles might separate them. This
measures, on the grid slides of ``benchmarks/slide_triage.py``, logistic aggregators with one
more region feature each: the number of tiles at 0.9 or more (as log(1 + n)), the mean of the
region's two highest tiles, and the region's mean tile log-odds. Each is fitted on the selection
half two ways: on each slide's heaviest region (as shipped), and as multiple instances (a few
rounds of refitting on each negative slide's best-scoring region under the current weights).

  python benchmarks/slide_region_features.py --model M --cache M_PROBS.npz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.slide_triage import (  # noqa: E402
    DEFAULT_DATA,
    GOAL_CLASSES,
    TILE_THRESHOLD,
    auc,
    balanced_weights,
    heaviest,
    region_x,
    set_aside,
)
from benchmarks.triage_slides import Grid, GridSlide, build_set, patch_table, say  # noqa: E402
from engine.triage import fit_logistic, region_stats  # noqa: E402

COLUMNS = ("log cells", "mean p", "smoothed max", "log(1 + tiles >= 0.9)", "top-2 mean", "mean log-odds")
VARIANTS = {
    "shipped three": (0, 1, 2),
    "+ log(1 + tiles >= 0.9)": (0, 1, 2, 3),
    "+ top-2 mean": (0, 1, 2, 4),
    "+ mean log-odds": (0, 1, 2, 5),
}
MIL_ROUNDS = 5


def region_table(grid: Grid) -> tuple[NDArray[np.float64], int]:
    """Regions x ``COLUMNS`` of one grid slide (one empty row for a slide without regions), and
    the row of its heaviest region (``slide_triage.heaviest``)."""
    stats = region_stats(grid, TILE_THRESHOLD, 3)
    n = len(stats.cells)
    if n == 0:
        return np.zeros((1, len(COLUMNS))), 0
    flat = stats.labels.ravel()
    sel = flat > 0
    idx = flat[sel] - 1
    p = np.clip(np.nan_to_num(np.asarray(grid, np.float64)).ravel()[sel], 1e-4, 1 - 1e-4)
    confident = np.bincount(idx, weights=(p >= 0.9).astype(np.float64), minlength=n)
    log_odds = np.bincount(idx, weights=np.log(p / (1 - p)), minlength=n) / np.maximum(stats.cells, 1)
    order = np.lexsort((-p, idx))  # by region, highest first
    first = np.searchsorted(idx[order], np.arange(n))
    top = p[order]
    second = np.where(stats.cells > 1, top[np.minimum(first + 1, len(top) - 1)], top[first])
    top2 = (top[first] + second) / 2
    extra = np.stack([np.log1p(confident), top2, log_odds], 1)
    return np.hstack([region_x(stats), extra]), heaviest(stats)


Table = tuple[NDArray[np.float64], int]


def fit(
    slides: Sequence[GridSlide], tables: Sequence[Table], cols: tuple[int, ...], mil: bool
) -> NDArray[np.float64]:
    """Logistic weights on the metastasis slides (>= 0.2 mm) against the negatives."""
    kept = [(s, t[:, cols], k) for s, (t, k) in zip(slides, tables, strict=True) if s.size_class != "itc"]
    y = np.array([0.0 if s.size_class == "negative" else 1.0 for s, _, _ in kept])
    weight = balanced_weights(y)
    heaviest_rows = [t[k] for _, t, k in kept]
    w = fit_logistic(np.stack(heaviest_rows), y, l2=1e-2, sample_weight=weight)
    for _ in range(MIL_ROUNDS if mil else 0):
        best = [
            t[int(np.argmax(w[0] + t @ w[1:]))] if yi == 0 else h
            for (_, t, _), yi, h in zip(kept, y, heaviest_rows, strict=True)
        ]
        w = fit_logistic(np.stack(best), y, l2=1e-2, sample_weight=weight)
    return w


def report(
    slides: Sequence[GridSlide],
    tables: Sequence[Table],
    cols: tuple[int, ...],
    w: NDArray[np.float64],
) -> str:
    scores = np.array([float((w[0] + t[:, cols] @ w[1:]).max()) for t, _ in tables])
    kind = np.array([s.size_class for s in slides])
    neg, goal = scores[kind == "negative"], scores[np.isin(kind, GOAL_CLASSES)]
    return (
        f"AUC all {auc(neg, scores[kind != 'negative']):.3f}  >=0.2mm {auc(neg, goal):.3f}  "
        f"set aside {set_aside(neg, goal, 1.0):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--cache", type=Path, default=None, help="patch-probability cache (.npz)")
    args = p.parse_args(argv)
    table = patch_table(args.data, args.model, args.cache)
    sets = {}
    for name in ("selection", "held-out"):
        slides = build_set(table, name)
        sets[name] = (slides, [region_table(s.probs) for s in slides])
    say(f"{'aggregator (fitted on selection)':37s}  selection{' ' * 35}| held-out")
    for label, cols in VARIANTS.items():
        for mil in (False, True):
            w = fit(*sets["selection"], cols, mil)
            rows = [report(*sets[name], cols, w) for name in ("selection", "held-out")]
            say(f"{label:26s} {'instances' if mil else 'heaviest':9s}  " + " | ".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
