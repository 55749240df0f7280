"""How much better must the tile model be? Slide triage with the normal tiles' evidence lowered.

A what-if on ``benchmarks/slide_triage.py``'s slides, for planning the tile model's work: every
*normal* patch variant's probability p becomes sigmoid(logit(p) - delta), the tumour patches
keep theirs, and for each delta the region score is refitted and its thresholds chosen on the
first selection set, as ``--calibrate`` does. It prints, per delta, the share of negative-slide
tiles at p >= 0.5 and 0.9 (what the tile model would have to reach) against the held-out
negatives set aside at 100% sensitivity for metastases of 0.2 mm or more, the negatives called
low and high, and the 20,000-tile negatives called low. delta = 0 is the model as it is.

This is not a result about any model: a real better model would also change the tumour tiles.
It bounds what a tile model with fewer false positives and the same tumour evidence would give.

Run from the repository root:
  python benchmarks/slide_triage_needs.py [--model M --cache M_PROBS.npz] [--deltas 0,1,2] [--replicates 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.slide_triage import (  # noqa: E402
    DEFAULT_DATA,
    Pooled,
    calibrated_policy,
    category_counts,
    features,
    fit_aggregator,
    shipped_scores,
    triage_metrics,
)
from benchmarks.triage_slides import PatchTable, build_set, patch_table, say  # noqa: E402
from engine.contract import TriagePolicy  # noqa: E402

DELTAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def lower_normals(table: PatchTable, delta: float) -> PatchTable:
    """``table`` with every normal patch variant's log-odds lowered by ``delta``."""
    p = np.clip(table.probs.astype(np.float64), 1e-7, 1 - 1e-7)
    lowered = 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) - delta)))
    normal = (table.labels == 0)[:, None]
    probs: NDArray[np.float32] = np.where(normal, lowered, table.probs).astype(np.float32)
    return dataclasses.replace(table, probs=probs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--cache", type=Path, default=None, help="slide_triage's patch-probability cache")
    p.add_argument("--deltas", default=",".join(str(d) for d in DELTAS), help="log-odds to take off normals")
    p.add_argument("--replicates", type=int, default=4, help="held-out slide sets per delta")
    args = p.parse_args(argv)
    if args.replicates < 1:
        p.error("--replicates must be at least 1")
    deltas = [float(d) for d in args.deltas.split(",")]
    base = patch_table(args.data, args.model, args.cache)
    say(
        "delta  normal tiles >=0.5 / >=0.9   held-out set aside at 100% (mean ± sd)   "
        "negatives low, high   20,000-tile negatives low"
    )
    for delta in deltas:
        table = lower_normals(base, delta)
        sel = build_set(table, "selection")
        sel_kinds, sel_feats = [s.size_class for s in sel], [features(s.probs) for s in sel]
        # fitted and thresholded on the first selection set, as --calibrate does
        weights = fit_aggregator(sel_kinds, sel_feats)
        policy = calibrated_policy(sel_kinds, sel_feats, weights, TriagePolicy())
        pooled = Pooled()
        aside = []
        neg_tiles: list[NDArray[np.float32]] = []
        for r in range(args.replicates):
            slides = build_set(table, "held-out", r)
            feats = [features(s.probs) for s in slides]
            pooled.add(slides, feats)
            kinds = [s.size_class for s in slides]
            aside.append(triage_metrics(kinds, shipped_scores(feats, policy))["goal_100"])
            neg_tiles += [s.probs[np.isfinite(s.probs)] for s in slides if s.size_class == "negative"]
        tiles = np.concatenate(neg_tiles)
        c = category_counts(pooled, policy)
        say(
            f"{delta:5.2f}  {np.mean(tiles >= 0.5):6.2%} / {np.mean(tiles >= 0.9):5.2%}          "
            f"{np.mean(aside):.2f} ± {np.std(aside):.2f}                         "
            f"{c.negatives_low / c.negatives:.0%}, {c.negatives_high} of {c.negatives}       "
            f"{c.big_low} of {c.big}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
