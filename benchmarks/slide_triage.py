"""Slide-level triage benchmark: does the slide score put negative slides last, at any size?

Two sets of mosaic slides are laid out from the two halves of PCam ``valid`` (the halves of
``training.train.valid_halves``, seed ``VALID_SPLIT_SEED``): the *selection* half, on which
score methods are compared, the logistic aggregator is fitted and the thresholds are chosen,
and the *held-out* half, which is only measured. Each set holds negative slides of 300 to
40,000 tissue tiles (normal patches only) and positive slides holding one compact metastasis
in each CAMELYON size class: isolated tumour cells (< 0.2 mm), micro (0.2-2 mm), macro (> 2 mm).
A tile is 95 px at 0.972 µm/px = 92.3 µm; a metastasis' size is its largest extent.

GRID (the shortcut, used for every number in the tables): the real model (``engine.model``)
is run once over every patch of the half in ``VARIANTS`` versions (the square's 8 symmetries,
all but the identity with a light colour jitter); a slide is a probability grid whose tissue
cells draw (patch, variant) pairs with replacement. ENGINE (``--engine-check``): a few real
mosaic slides are written with ``scripts/mosaic_slide.py`` and analysed through OpenSlide and
``engine.pipeline``; the grid twin of the same layout (identity variants) must give the same
tile probabilities up to JPEG, and the same score and category. The slides of both kinds are
built in ``benchmarks/triage_slides.py``; this file holds the score candidates, the metrics,
the calibration and the command line.

REPLICATES: the 100%-sensitivity cut is set by the weakest of 100 metastases, so the figures of
one slide set swing with its draw. ``--replicates R`` lays out R sets per half from the same
patches (replicate 0 is the set the detailed tables and the calibration use) and reports every
candidate's mean and spread over them, and the policy's categories summed over all sets; the
selection sets 1..R-1 are new slides to the calibration too.

Run from the repository root:
  python benchmarks/slide_triage.py                       # tables for the model's own policy
  python benchmarks/slide_triage.py --calibrate --model M # fit + choose thresholds, re-stamp M
  python benchmarks/slide_triage.py --engine-check        # grid shortcut vs the real engine
  python benchmarks/slide_triage.py --without-stubborn-normals   # what-if: see without_stubborn_normals
  python benchmarks/slide_triage.py --calibrate --dry-run --tile-threshold 0.8   # regions at p >= 0.8
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.triage_slides import (  # noqa: E402
    CLASSES,
    NEG_PER_SIZE,
    NEG_SIZES,
    VARIANTS,
    Grid,
    GridSlide,
    PatchTable,
    build_set,
    engine_check,
    patch_table,
    say,
)
from engine.contract import TriagePolicy  # noqa: E402
from engine.triage import (  # noqa: E402
    MASS_HALF,
    RegionStats,
    fit_logistic,
    logistic_region_logits,
    logistic_region_scores,
    or_empty_region,
    region_stats,
    smoothed,
    top_k_mean,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "pcam"
GOAL_CLASSES = ("micro", "macro")  # metastases of 0.2 mm or more
HALVES = ("selection", "held-out")
# The 100%-sensitivity cut is set by the weakest of 100 metastases, so one slide set is a noisy
# measure (epoch 29's set-aside ranged 0.20-0.68 over eight held-out sets): report a mean.
REPLICATES = 5
TILE_THRESHOLD = 0.5
BIG_NEGATIVE = 20_000  # the realistic negative slide, in tissue tiles (one of NEG_SIZES)


# ------------------------------------------------------------------------------ candidates


@dataclass(frozen=True)
class Features:
    """What every candidate needs from one slide, computed once."""

    top10: float
    smooth3: float
    smooth5: float
    stats: RegionStats  # regions at the tile threshold (default TILE_THRESHOLD), 3x3 smoothing
    stats_hi: RegionStats  # regions at 0.9
    analysed: int  # tiles with a probability


def features(grid: Grid, tile_threshold: float = TILE_THRESHOLD) -> Features:
    s3 = smoothed(grid, 3)
    s5 = smoothed(grid, 5)
    return Features(
        top10=top_k_mean(grid, 10) or 0.0,
        smooth3=float(np.nanmax(s3)),
        smooth5=float(np.nanmax(s5)),
        stats=region_stats(grid, tile_threshold, 3),
        stats_hi=region_stats(grid, 0.9, 3),
        analysed=int(np.isfinite(grid).sum()),
    )


def region_x(stats: RegionStats) -> NDArray[np.float64]:
    """Aggregator inputs per region: log(cells), mean probability, smoothed max."""
    return np.stack([np.log(np.maximum(stats.cells, 1)), stats.mean_prob, stats.smooth_max], 1)


def _largest(stats: RegionStats) -> float:
    return float(stats.cells.max()) if len(stats.cells) else 0.0


@dataclass(frozen=True)
class Fits:
    """The aggregators fitted on the selection slides."""

    logistic: NDArray[np.float64]  # intercept, log cells, mean prob, smoothed max
    sized: NDArray[np.float64]  # the same + log(tiles analysed)
    pooled: NDArray[np.float64]  # the first, fitted on every replicate selection set


CANDIDATES: dict[str, Callable[[Features, Fits], float]] = {
    "top10_mean (current)": lambda f, w: f.top10,
    "smoothed_max 3x3": lambda f, w: f.smooth3,
    "smoothed_max 5x5": lambda f, w: f.smooth5,
    "largest_region (cells)": lambda f, w: _largest(f.stats),
    "largest_region p>=0.9 (cells)": lambda f, w: _largest(f.stats_hi),
    "region_mass (cells x mean)": lambda f, w: float(
        (f.stats.cells * f.stats.mean_prob).max() if len(f.stats.cells) else 0.0
    ),
    "region_logistic (fitted on selection)": lambda f, w: _logistic_slide(f.stats, w.logistic),
    "region_logistic + log(tiles) (fitted)": lambda f, w: _sized_slide(f, w.sized),
    "region_logistic (all selection sets)": lambda f, w: _logistic_slide(f.stats, w.pooled),
}


def _logistic_slide(stats: RegionStats, w: NDArray[np.float64]) -> float:
    return float(logistic_region_scores(or_empty_region(stats), tuple(w)).max())


def _sized_slide(f: Features, w: NDArray[np.float64]) -> float:
    """The logistic score with a slide-size term: a larger slide must show a stronger region."""
    z = float(logistic_region_logits(or_empty_region(f.stats), tuple(w[:4])).max())
    return _sigmoid(z + w[4] * math.log(max(f.analysed, 1)))


def heaviest(stats: RegionStats) -> int:
    """Index of the region with the largest cells x mean probability (-1 if none)."""
    if len(stats.cells) == 0:
        return -1
    return int(np.argmax(stats.cells * stats.mean_prob))


def fit_aggregator(
    kinds: Sequence[str], feats: Sequence[Features], sized: bool = False
) -> NDArray[np.float64]:
    """Slide-level logistic regression on the heaviest region's features.

    Negatives against metastases of 0.2 mm or more (isolated tumour cells are left out of the
    fit), the two classes weighted equally. In the engine each region is scored with these
    weights and the slide takes the best region's score. ``sized`` adds log(tiles analysed) as
    a fifth input (a candidate, measured only).
    """
    xs: list[NDArray[np.float64]] = []
    ys: list[float] = []
    for kind, f in zip(kinds, feats, strict=True):
        if kind == "itc":
            continue
        k = heaviest(f.stats)
        x = region_x(f.stats)[k] if k >= 0 else np.zeros(3)
        xs.append(np.append(x, math.log(max(f.analysed, 1))) if sized else x)
        ys.append(0.0 if kind == "negative" else 1.0)
    y = np.asarray(ys)
    return fit_logistic(np.stack(xs), y, l2=1e-2, sample_weight=balanced_weights(y))


def balanced_weights(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sample weights that give the positive and the negative slides equal total weight."""
    pos = max(1.0, float(y.sum()))
    neg = max(1.0, float(len(y) - y.sum()))
    out: NDArray[np.float64] = np.where(y > 0, len(y) / (2 * pos), len(y) / (2 * neg))
    return out


# --------------------------------------------------------------------------------- metrics


def auc(neg: NDArray[np.float64], pos: NDArray[np.float64]) -> float:
    """P(positive > negative) + 0.5 P(tie)."""
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def set_aside(neg: NDArray[np.float64], pos: NDArray[np.float64], sensitivity: float) -> float:
    """Fraction of negatives strictly below the cut that keeps ``sensitivity`` of positives: the
    cut is the positive after the ``floor((1 - sensitivity) * n)`` weakest, which may fall below it
    (at 98%: 1 of 50, 2 of 100)."""
    if len(pos) == 0:
        return float("nan")
    may_miss = math.floor((1 - sensitivity) * len(pos) + 1e-9)
    cut = np.sort(pos)[min(may_miss, len(pos) - 1)]
    return float((neg < cut).mean())


def triage_metrics(kinds: Sequence[str], scores: NDArray[np.float64]) -> dict[str, float]:
    """Slide AUC (all positives, >= 0.2 mm, each class) and the negatives set aside at 100% and
    98% sensitivity, per class and for metastases of 0.2 mm or more."""
    kind = np.array(kinds)
    neg = scores[kind == "negative"]
    goal = scores[np.isin(kind, GOAL_CLASSES)]
    out = {"auc_all": auc(neg, scores[kind != "negative"]), "auc_goal": auc(neg, goal)}
    out |= {f"auc_{c}": auc(neg, scores[kind == c]) for c in CLASSES}
    for cls, pos in [*((c, scores[kind == c]) for c in CLASSES), ("goal", goal)]:
        out[f"{cls}_100"] = set_aside(neg, pos, 1.0)
        out[f"{cls}_98"] = set_aside(neg, pos, 0.98)
    return out


def report_candidate(name: str, kinds: Sequence[str], scores: NDArray[np.float64]) -> str:
    m = triage_metrics(kinds, scores)
    parts = [f"{name:40s} AUC(all) {m['auc_all']:.3f}", f"AUC(>=0.2mm) {m['auc_goal']:.3f}"]
    parts += [f"{cls} {m[f'{cls}_100']:.2f}/{m[f'{cls}_98']:.2f}" for cls in CLASSES]
    parts.append(f">=0.2mm {m['goal_100']:.2f}/{m['goal_98']:.2f}")
    return "  ".join(parts)


SUMMARY_KEYS = ("auc_all", "auc_itc", "auc_goal", "goal_100", "goal_98")


def replicate_summary(
    name: str, per_replicate: Sequence[dict[str, float]], keys: Sequence[str] = SUMMARY_KEYS
) -> str:
    """Mean and standard deviation over the replicate slide sets of some :func:`triage_metrics`."""
    cols = []
    for key in keys:
        v = np.array([m[key] for m in per_replicate])
        cols.append(f"{key} {v.mean():.3f}±{v.std():.3f}")
    return f"{name:40s} " + "  ".join(cols)


def category_table(slides: Sequence[GridSlide], policy: TriagePolicy, scores: NDArray[np.float64]) -> str:
    cats = ("low suspicion", "intermediate", "high suspicion")
    rows = ["slides                       n   " + "  ".join(f"{c:>14s}" for c in cats)]
    groups: list[tuple[str, str, int | None]] = [
        ("negative (all)", "negative", None),
        *[(f"negative {n} tiles", "negative", n) for n in NEG_SIZES],
        *[(f"positive {c}", c, None) for c in CLASSES],
    ]
    for label, cls, size in groups:
        idx = [
            i
            for i, s in enumerate(slides)
            if s.size_class == cls and (size is None or s.tissue_tiles == size)
        ]
        got = [policy.category(float(scores[i])) for i in idx]
        rows.append(f"{label:26s} {len(idx):4d}   " + "  ".join(f"{got.count(c):14d}" for c in cats))
    return "\n".join(rows)


def micro_breakdown(slides: Sequence[GridSlide], scores: NDArray[np.float64]) -> str:
    """Negatives set aside at 100% sensitivity for micro-metastases of at least N tiles."""
    kind = np.array([s.size_class for s in slides])
    cells = np.array([int(s.tumour.sum()) for s in slides])
    neg = scores[kind == "negative"]
    parts = []
    for n in (3, 10, 30, 100):
        pick = (kind == "micro") & (cells >= n)
        parts.append(f">={n} tiles ({int(pick.sum())}): {set_aside(neg, scores[pick], 1.0):.2f}")
    return "negatives set aside at 100% sensitivity for micro-metastases of " + ", ".join(parts)


def weakest_micro(slides: Sequence[GridSlide], scores: NDArray[np.float64], n: int = 3) -> str:
    """The micro-metastases that set the 100%-sensitivity cut, with the tile evidence they hold,
    beside how often a negative slide's tiles reach the same probabilities by chance."""
    kind = np.array([s.size_class for s in slides])
    neg_tiles = np.concatenate([s.probs[np.isfinite(s.probs)] for s in slides if s.size_class == "negative"])
    rows = [
        f"tiles of negative slides at p >= 0.5: {np.mean(neg_tiles >= 0.5):.2%}, at p >= 0.9: "
        f"{np.mean(neg_tiles >= 0.9):.2%}; the {n} weakest micro-metastases (score, tiles, their p):"
    ]
    for i in np.flatnonzero(kind == "micro")[np.argsort(scores[kind == "micro"])][:n]:
        p = np.sort(slides[i].probs[slides[i].tumour])[::-1]
        rows.append(f"  {scores[i]:.3f}  {len(p):3d} tiles  p " + " ".join(f"{v:.2f}" for v in p[:8]))
    return "\n".join(rows)


STUBBORN_P = 0.9
STUBBORN_VARIANTS = 4


def confident_variants(table: PatchTable, p_min: float = STUBBORN_P) -> NDArray[np.int64]:
    """Per patch, how many of its variants the model puts at p >= ``p_min``."""
    return (table.probs >= p_min).sum(axis=1)


def confident_normals(
    table: PatchTable, half_name: str, p_min: float = STUBBORN_P, min_variants: int = STUBBORN_VARIANTS
) -> str:
    """How concentrated a half's confident false positives are: the share of its normal patch
    variants at p >= ``p_min``, and how much of that comes from the few patches confident in at
    least ``min_variants`` of their variants. Negative slides are filled with these variants, so a
    patch the model always calls tumour comes back wherever it is drawn."""
    half = table.half(half_name)
    normal = half[table.labels[half] == 0]
    confident = confident_variants(table, p_min)[normal]
    total = int(confident.sum())
    stubborn = confident >= min_variants
    share = float(confident[stubborn].sum()) / total if total else 0.0
    return (
        f"normal patch variants at p >= {p_min}: {total / confident.size / VARIANTS:.2%} of "
        f"{confident.size} patches x {VARIANTS}; {int(stubborn.sum())} patches confident in >= "
        f"{min_variants} of their {VARIANTS} variants hold {share:.0%} of them"
    )


def stubborn_normals(table: PatchTable) -> NDArray[np.bool_]:
    """Per patch: a normal patch the model puts at p >= STUBBORN_P in at least STUBBORN_VARIANTS
    of its variants."""
    return (table.labels == 0) & (confident_variants(table) >= STUBBORN_VARIANTS)


def without_stubborn_normals(table: PatchTable) -> tuple[PatchTable, int]:
    """``table`` with its :func:`stubborn_normals` taken out of both pools (label -1), and how
    many there were.

    A what-if, not a result: the model itself picks the patches left out, so the slides that
    follow bound what those few patches cost the triage (``benchmarks/centre_evidence.py``
    measures where the model's evidence for them lies)."""
    stubborn = stubborn_normals(table)
    labels = np.where(stubborn, -1, table.labels)
    return dataclasses.replace(table, labels=labels), int(stubborn.sum())


# ----------------------------------------------------------------------------- calibration


def shipped_scores(feats: Sequence[Features], policy: TriagePolicy) -> NDArray[np.float64]:
    """Slide scores of ``policy`` from precomputed features (same maths as engine.triage). The
    features hold 3x3 smoothing and the top-10 mean only: a policy asking for other values is
    refused rather than scored as something the engine would not compute."""
    if policy.smooth_cells != 3:
        raise _unscorable(policy)
    if policy.score_method == "region_logistic":
        return np.array([_logistic_slide(f.stats, np.asarray(policy.weights)) for f in feats])
    if policy.score_method == "smoothed_max":
        return np.array([f.smooth3 for f in feats])
    if policy.score_method == "largest_region":
        return np.array([1.0 - 2.0 ** (-_largest(f.stats) / MASS_HALF) for f in feats])
    if policy.score_method == "region_mass":
        mass = [
            float((f.stats.cells * f.stats.mean_prob).max()) if len(f.stats.cells) else 0.0 for f in feats
        ]
        return np.array([1.0 - 2.0 ** (-m / MASS_HALF) for m in mass])
    if policy.top_k != 10:  # the top-k mean, the one score that reads top_k
        raise _unscorable(policy)
    return np.array([f.top10 for f in feats])


def _unscorable(policy: TriagePolicy) -> ValueError:
    return ValueError(
        f"this benchmark scores 3x3 smoothing and the top-10 mean; the policy asks for "
        f"smooth_cells={policy.smooth_cells}, top_k={policy.top_k}"
    )


def calibrated_policy(
    kinds: Sequence[str], feats: Sequence[Features], weights: NDArray[np.float64], base: TriagePolicy
) -> TriagePolicy:
    """``base`` as a region-logistic policy with ``weights`` (rounded as the contract stores them)
    and the thresholds chosen on the selection slides (``kinds``, ``feats``) from the scores the
    rounded weights give, i.e. the scores the engine computes."""
    policy = dataclasses.replace(
        base,
        high_threshold=1.0,
        low_threshold=0.0,
        score_method="region_logistic",
        smooth_cells=3,
        weights=tuple(round(float(w), 4) for w in weights),
    )
    low, high = choose_thresholds(kinds, shipped_scores(feats, policy))
    return dataclasses.replace(policy, low_threshold=low, high_threshold=high)


def choose_thresholds(kinds: Sequence[str], scores: NDArray[np.float64]) -> tuple[float, float]:
    """(low, high) on the selection slides (``kinds``: each slide's size class).

    low: half-way (in log-odds) between the lowest-scoring metastasis of 0.2 mm or more and
    the score just below it among the negatives that would still be set aside, capped to keep
    a margin of 20% of that metastasis' log-odds distance to 0; so no selection metastasis of
    0.2 mm or more is called low. high: above every selection negative (the highest negative's
    log-odds + 0.5), so no selection negative is called high.
    """
    kind = np.array(kinds)
    goal = scores[np.isin(kind, GOAL_CLASSES)]
    neg = scores[kind == "negative"]
    lo_pos = _logit(float(goal.min()))
    below = neg[neg < goal.min()]
    lo_neg = _logit(float(below.max())) if len(below) else lo_pos - 2.0
    low = _sigmoid(min((lo_pos + lo_neg) / 2, lo_pos - 0.2 * abs(lo_pos) - 0.05))
    high = _sigmoid(_logit(float(neg.max())) + 0.5)
    return round(low, 4), round(max(high, low), 4)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def stamp(model_path: Path, out_path: Path, policy: TriagePolicy) -> None:
    """Write ``model_path`` with ``policy`` in its contract to ``out_path``; weights unchanged."""
    from engine.contract import METADATA_KEY
    from engine.outputs import write_bytes_atomic
    from training.stamp import restamp

    stamped = restamp(model_path.read_bytes(), lambda c: dataclasses.replace(c, triage=policy))
    write_bytes_atomic(out_path, stamped)
    say(f"# wrote {out_path} ({METADATA_KEY} updated; sha256 {hashlib.sha256(stamped).hexdigest()})")


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--cache", type=Path, default=None, help="patch-probability cache (.npz)")
    p.add_argument("--calibrate", action="store_true", help="fit the aggregator, choose thresholds, re-stamp")
    p.add_argument("--out", type=Path, default=None, help="with --calibrate: write here (default: --model)")
    p.add_argument("--dry-run", action="store_true", help="with --calibrate: print, do not write")
    p.add_argument(
        "--tile-threshold",
        type=float,
        default=None,
        help=f"with --calibrate: tiles at or above this form regions (default {TILE_THRESHOLD})",
    )
    p.add_argument("--engine-check", action="store_true", help="validate on real mosaic slides")
    p.add_argument("--engine-big", type=int, default=0, help="with --engine-check: add a negative of N tiles")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    p.add_argument(
        "--second-look",
        action="store_true",
        help="tile probabilities averaged over each patch's four one-pixel crops (measured, not built)",
    )
    p.add_argument(
        "--replicates",
        type=int,
        default=REPLICATES,
        help=f"slide sets per half laid out from the same patches (default {REPLICATES})",
    )
    p.add_argument(
        "--without-stubborn-normals",
        action="store_true",
        help="what-if: leave out the normal patches the model calls tumour in most variants",
    )
    args = p.parse_args(argv)
    if args.replicates < 1:
        p.error("--replicates must be at least 1")
    if args.tile_threshold is not None and not (args.calibrate and 0 < args.tile_threshold < 1):
        p.error("--tile-threshold needs --calibrate and a value between 0 and 1")
    if args.without_stubborn_normals and args.calibrate and not args.dry_run:
        p.error("--without-stubborn-normals is a what-if: use it with --calibrate only with --dry-run")
    return args


@dataclass
class Pooled:
    """Size classes and features of every replicate set of one half (grids dropped)."""

    kinds: list[list[str]] = dataclasses.field(default_factory=list)
    feats: list[list[Features]] = dataclasses.field(default_factory=list)
    tiles: list[int] = dataclasses.field(default_factory=list)  # tissue tiles, all sets in order

    def add(self, slides: Sequence[GridSlide], feats: list[Features]) -> None:
        self.kinds.append([s.size_class for s in slides])
        self.feats.append(feats)
        self.tiles.extend(s.tissue_tiles for s in slides)

    def all_kinds(self) -> list[str]:
        return [k for ks in self.kinds for k in ks]

    def all_feats(self) -> list[Features]:
        return [f for fs in self.feats for f in fs]


@dataclass(frozen=True)
class CategoryCounts:
    """A policy's categories summed over every replicate set of one half."""

    negatives: int
    negatives_low: int
    negatives_high: int
    goal: int  # metastases of 0.2 mm or more
    goal_low: int
    big: int  # negatives of BIG_NEGATIVE tiles
    big_low: int


def category_counts(pooled: Pooled, policy: TriagePolicy) -> CategoryCounts:
    kinds = np.array(pooled.all_kinds())
    cats = np.array([policy.category(float(x)) for x in shipped_scores(pooled.all_feats(), policy)])
    neg = kinds == "negative"
    goal = np.isin(kinds, GOAL_CLASSES)
    big = neg & (np.array(pooled.tiles) == BIG_NEGATIVE)
    low = cats == "low suspicion"
    return CategoryCounts(
        negatives=int(neg.sum()),
        negatives_low=int((low & neg).sum()),
        negatives_high=int((neg & (cats == "high suspicion")).sum()),
        goal=int(goal.sum()),
        goal_low=int((low & goal).sum()),
        big=int(big.sum()),
        big_low=int((low & big).sum()),
    )


def policy_counts(pooled: Pooled, policy: TriagePolicy) -> str:
    """The policy's categories summed over every replicate set of one half, as one line."""
    c = category_counts(pooled, policy)
    return (
        f"negatives low {c.negatives_low / c.negatives:.2f} ({c.negatives}), high {c.negatives_high}; "
        f"metastases >= 0.2 mm low {c.goal_low} of {c.goal}; 20,000-tile negatives low "
        f"{c.big_low} of {c.big}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from engine.model import Model, default_model_path

    model_path = args.model or default_model_path()
    table = patch_table(args.data, args.model, args.cache, args.second_look)
    if args.without_stubborn_normals:
        table, n_out = without_stubborn_normals(table)
        say(f"# what-if: {n_out} stubborn normal patches left out of the slides (chosen by the model)")
    policy = Model.load(args.model, threads=1).contract.triage
    # Regions are formed where the policy forms them; a calibration may choose anew.
    threshold = args.tile_threshold or (TILE_THRESHOLD if args.calibrate else policy.tile_threshold)
    say(f"# regions: tiles at p >= {threshold}")
    t0 = time.perf_counter()
    sets = {name: build_set(table, name) for name in HALVES}
    feats = {name: [features(s.probs, threshold) for s in slides] for name, slides in sets.items()}
    pooled = {name: Pooled() for name in HALVES}
    for name in HALVES:
        pooled[name].add(sets[name], feats[name])
        for r in range(1, args.replicates):
            slides = build_set(table, name, r)
            pooled[name].add(slides, [features(s.probs, threshold) for s in slides])
    say(
        f"# GRID slides: {args.replicates} replicate set(s) per half built and featurised in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    sel_kinds = [s.size_class for s in sets["selection"]]
    weights = fit_aggregator(sel_kinds, feats["selection"])
    fits = Fits(
        weights,
        fit_aggregator(sel_kinds, feats["selection"], sized=True),
        fit_aggregator(pooled["selection"].all_kinds(), pooled["selection"].all_feats()),
    )
    say(
        "# region_logistic weights (intercept, log cells, mean prob, smoothed max): "
        f"{np.round(weights, 3).tolist()}; + log(tiles): {np.round(fits.sized, 3).tolist()}; "
        f"fitted on all {args.replicates} selection sets: {np.round(fits.pooled, 3).tolist()}"
    )

    if args.calibrate:
        base = TriagePolicy(
            tile_threshold=threshold,
            top_k=policy.top_k,
            calibration=(
                "benchmarks/slide_triage.py --calibrate: region logistic regression fitted on "
                f"{sum(k != 'itc' for k in sel_kinds)} selection-half PCam mosaic grid slides "
                "(negatives and metastases of 0.2 mm or more) "
                f"(VALID_SPLIT_SEED half 1); low = no metastasis >= 0.2 mm called low with a "
                "log-odds margin, high = above every selection negative (+0.5 log-odds); "
                f"{time.strftime('%Y-%m-%d')}"
            ),
        )
        policy = calibrated_policy(sel_kinds, feats["selection"], weights, base)
        say(f"# calibrated policy: {json.dumps(dataclasses.asdict(policy))}")
        if not args.dry_run:
            stamp(model_path, args.out or model_path, policy)

    numbers: dict[str, dict[str, list[float]]] = {}
    for name, slides in sets.items():
        kinds = [s.size_class for s in slides]
        say(
            f"\n== {name.upper()} set, replicate 0 (GRID shortcut): {kinds.count('negative')} negatives "
            f"({', '.join(str(n) for n in NEG_SIZES)} tissue tiles, {NEG_PER_SIZE} each), "
            + ", ".join(f"{kinds.count(c)} {c}" for c in CLASSES)
        )
        say(
            "columns: slide AUC vs all positives and vs >= 0.2 mm; per class, fraction of negatives "
            "set aside (below the cut) at 100%/98% sensitivity"
        )
        numbers[name] = {}
        for cname, fn in CANDIDATES.items():
            scores = np.array([fn(f, fits) for f in feats[name]])
            numbers[name][cname] = scores.tolist()
            say(report_candidate(cname, kinds, scores))
        scores = shipped_scores(feats[name], policy)
        say(
            f"\ncategories with the policy ({policy.score_method}, low {policy.low_threshold}, "
            f"high {policy.high_threshold}):"
        )
        say(category_table(slides, policy, scores))
        say(micro_breakdown(slides, scores))
        say(weakest_micro(slides, scores))
        say(confident_normals(table, name))
        big = [
            i for i, s in enumerate(slides) if s.size_class == "negative" and s.tissue_tiles == BIG_NEGATIVE
        ]
        low_big = sum(policy.category(float(scores[i])) == "low suspicion" for i in big)
        say(f"20,000-tile negatives called low: {low_big}/{len(big)}")

    replicates: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in HALVES:
        say(
            f"\n== {name.upper()}, {args.replicates} replicate sets (mean ± sd over sets; fits come "
            "from the selection set of replicate 0 unless said): slide AUC vs all "
            "positives and vs >= 0.2 mm, negatives set aside at 100%/98% sensitivity for metastases "
            ">= 0.2 mm"
        )
        replicates[name] = {}
        for cname, fn in CANDIDATES.items():
            per = [
                triage_metrics(k, np.array([fn(f, fits) for f in fs]))
                for k, fs in zip(pooled[name].kinds, pooled[name].feats, strict=True)
            ]
            replicates[name][cname] = per
            say(replicate_summary(cname, per))
        say(f"policy over all {name} sets: {policy_counts(pooled[name], policy)}")
    if args.json:
        what_if = {"without_stubborn_normals": args.without_stubborn_normals}
        report = {
            "replicate0": numbers,
            "replicates": replicates,
            "what_if": what_if,
            "tile_threshold": threshold,
        }
        args.json.write_text(json.dumps(report))
    if args.engine_check:
        engine_check(table, args.out or args.model, args.data, args.engine_big)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
