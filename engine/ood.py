"""Out-of-distribution check: how far a slide's tissue lies from the model's training patches.

The model only knows lymph-node H&E at about 0.97 µm/px (PatchCamelyon); on anything else it
still gives a confident score that means nothing. Two measures, both computed during the
analysis from what the pipeline already has:

- **colour**: each tile's stain statistics over its stained pixels (``TILE_STATS``: mean optical
  density per channel, haematoxylin-dominant fraction, OD spread), as a Mahalanobis distance to
  the training patches' (``ColourStats``), normalised so that training patches are at about 1.
  Every model gets it.
- **features**: the model's own pooled features against their training statistics
  (:class:`FeatureStats`), for models that export them.

Per measure the slide keeps the median tile distance and the fraction of tiles beyond
``far_tile``; a slide is out of distribution when, for any measure, the median or the far
fraction exceeds its limit (``Limits``, in ``OodPolicy``). The
reference statistics and limits live in the model contract (``ModelContract.ood``); contracts
without them get the defaults below, measured and chosen by ``benchmarks/ood_calibrate.py``,
which re-runs the calibration for any model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

STAINED_OD = 0.15
"""Summed R+G+B optical density above which a pixel counts as stained (not glass)."""

# Ruifrok & Johnston's haematoxylin, eosin and DAB optical-density vectors (rows), as in
# scikit-image's ``rgb2hed``; their inverse unmixes a pixel's OD into stain amounts.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
_OD_LUT = (-np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)

TILE_STATS = ("od_r", "od_g", "od_b", "haematoxylin_fraction", "od_std")
"""What ``tile_colour`` measures per tile, over its stained pixels: mean optical density of each
channel, the fraction of pixels where haematoxylin outweighs eosin, and the spread of the
summed OD (texture)."""


@dataclass(frozen=True)
class ColourStats:
    """Mean and covariance of the ``TILE_STATS`` vectors of the training patches."""

    mean: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    n_patches: int

    def distance(self, stats: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """Normalised Mahalanobis distance of each row of ``stats`` (N x D): about 1 on training
        patches (squared distance divided by D); NaN rows (no stained pixel) stay NaN."""
        d = np.asarray(stats, dtype=np.float64) - np.asarray(self.mean)
        inv = np.linalg.inv(np.asarray(self.covariance, dtype=np.float64))
        d2 = np.einsum("ni,ij,nj->n", d, inv, d)
        out: NDArray[np.float64] = np.sqrt(np.maximum(d2, 0.0) / len(self.mean))
        return out

    @classmethod
    def fit(cls, stats: NDArray[np.floating[Any]]) -> ColourStats:
        """Statistics of the rows of ``stats`` (NaN rows ignored)."""
        x = np.asarray(stats, dtype=np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        cov = np.cov(x, rowvar=False)
        return cls(
            mean=tuple(round(float(v), 6) for v in x.mean(axis=0)),
            covariance=tuple(tuple(round(float(v), 8) for v in row) for row in cov),
            n_patches=len(x),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColourStats:
        return cls(
            mean=tuple(float(v) for v in data["mean"]),
            covariance=tuple(tuple(float(v) for v in row) for row in data["covariance"]),
            n_patches=int(data["n_patches"]),
        )


@dataclass(frozen=True)
class FeatureStats:
    """Where the model's pooled features lie on its training patches, for out-of-distribution checks.

    A principal-component model of the features: ``mean`` (F), the top ``components`` (k x F, rows
    orthonormal) with their ``variances`` (k), and ``residual_variance``, the mean squared length of
    what the components leave out. Computed on the shipped model itself (after quantization), from
    ``n_patches`` training patches; stored in the contract as ``feature_stats``.
    """

    mean: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]
    variances: tuple[float, ...]
    residual_variance: float
    n_patches: int

    def distance(self, features: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """Normalised Mahalanobis distance of each row of ``features`` (N x F): about 1 on the
        training patches, growing as a patch moves away from them.

        The components are modelled with their own variances, the rest of the space as isotropic
        (each of its F - k directions with variance ``residual_variance / (F - k)``), and the
        squared distance is divided by F.
        """
        f = np.asarray(features, dtype=np.float64) - np.asarray(self.mean)
        comps = np.asarray(self.components, dtype=np.float64)
        dim, k = len(self.mean), len(self.variances)
        z = f @ comps.T
        residual = f - z @ comps
        d2 = (z**2 / np.asarray(self.variances)).sum(axis=1)
        if dim > k:
            d2 += (residual**2).sum(axis=1) * (dim - k) / max(self.residual_variance, 1e-12)
        out: NDArray[np.float64] = np.sqrt(d2 / dim)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureStats:
        return cls(
            mean=tuple(float(v) for v in data["mean"]),
            components=tuple(tuple(float(v) for v in row) for row in data["components"]),
            variances=tuple(float(v) for v in data["variances"]),
            residual_variance=float(data["residual_variance"]),
            n_patches=int(data["n_patches"]),
        )


# PatchCamelyon train split, 4,000 random patches (3,998 with stain) (central 95 px), measured by
# ``python -m benchmarks.ood_calibrate``; the same for every PCam-trained model.
PCAM_COLOUR = ColourStats(
    mean=(0.219774, 0.42021, 0.224874, 0.71308, 0.566314),
    covariance=(
        (0.00916835, 0.01576747, 0.00653713, 0.00737061, 0.01677393),
        (0.01576747, 0.03040993, 0.01117204, 0.00441055, 0.02871039),
        (0.00653713, 0.01117204, 0.0080062, 0.0040496, 0.01598073),
        (0.00737061, 0.00441055, 0.0040496, 0.03555458, 0.01308667),
        (0.01677393, 0.02871039, 0.01598073, 0.01308667, 0.04426317),
    ),
    n_patches=3998,
)


@dataclass(frozen=True)
class Limits:
    """A tile is far beyond ``far_tile``; a slide is out of distribution when its median tile
    distance exceeds ``median`` or its fraction of far tiles exceeds ``far_fraction``."""

    far_tile: float
    median: float
    far_fraction: float


@dataclass(frozen=True)
class OodPolicy:
    """Reference statistics and the limits that make a slide out of distribution.

    Defaults chosen with ``benchmarks/ood_calibrate.py`` (numbers for the shipped model): tiles
    farther than 2 from PCam's stain statistics are 1-2% of PCam patches, 2-6% of mosaic slides
    of PCam patches (demo 2.1%, 0.25 and 0.5 µm/px mosaics from ``make_large_slide.py`` 5.8% and
    4.9%), 14% of CMU-1 (skin) and 54-56% of the TCGA head-and-neck slide, whose median (2.02) is
    also above every mosaic's (0.82-1.04). The far-fraction limit 0.10 sits between 0.058 and
    0.141: a thin margin on both sides, measured on five slides; re-run for new data.
    """

    colour: ColourStats = PCAM_COLOUR
    colour_limits: Limits = Limits(far_tile=2.0, median=1.4, far_fraction=0.10)
    feature_limits: Limits = Limits(far_tile=3.0, median=1.5, far_fraction=0.25)
    calibration: str = "default policy: PCam colour reference and limits from benchmarks/ood_calibrate.py"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OodPolicy:
        values = dict(data)
        if "colour" in values:
            values["colour"] = ColourStats.from_dict(values["colour"])
        for key in ("colour_limits", "feature_limits"):
            if key in values:
                values[key] = Limits(**values[key])
        return cls(**values)


@dataclass(frozen=True)
class OodMeasure:
    """One measure's slide aggregate: median tile distance and the fraction of far tiles."""

    median: float | None
    far_fraction: float | None

    def exceeds(self, limits: Limits) -> bool:
        if self.median is None or self.far_fraction is None:
            return False
        return self.median > limits.median or self.far_fraction > limits.far_fraction


@dataclass(frozen=True)
class OodVerdict:
    """Whether the slide is out of distribution, and the scores behind it."""

    out_of_distribution: bool
    colour: OodMeasure
    features: OodMeasure | None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "colour_median": _round(self.colour.median),
            "colour_far_fraction": _round(self.colour.far_fraction),
            "feature_median": None if self.features is None else _round(self.features.median),
            "feature_far_fraction": None if self.features is None else _round(self.features.far_fraction),
            "reasons": list(self.reasons),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


SAMPLE_STEP = 2
"""Every SAMPLE_STEP-th pixel of each row and column is measured: a quarter of the pixels give
the same means, at a quarter of the cost (the check must not slow the analysis)."""

# Per-channel lookup tables (uint8 value -> float32): optical density, and each channel's share
# of (haematoxylin - eosin) after unmixing, so no per-pixel matrix product is needed.
_H_MINUS_E = _HED_FROM_RGB[:, 0] - _HED_FROM_RGB[:, 1]
_HE_LUTS = [(_OD_LUT * np.float32(_H_MINUS_E[c])).astype(np.float32) for c in range(3)]


def tile_colour(patches: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``TILE_STATS`` of each patch (N x H x W x 3 -> N x 5), over every ``SAMPLE_STEP``-th
    pixel; NaN for a patch with no stained pixel."""
    px = patches[:, ::SAMPLE_STEP, ::SAMPLE_STEP].reshape(len(patches), -1, 3)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    od_r, od_g, od_b = _OD_LUT[r], _OD_LUT[g], _OD_LUT[b]
    total = od_r + od_g + od_b
    stained = total > STAINED_OD
    counts = stained.sum(axis=1)
    n = np.maximum(counts, 1).astype(np.float64)
    w = stained.astype(np.float32)
    h_dominant = (_HE_LUTS[0][r] + _HE_LUTS[1][g] + _HE_LUTS[2][b]) > 0
    wt = w * total
    out = np.column_stack(
        [
            (w * od_r).sum(axis=1) / n,
            (w * od_g).sum(axis=1) / n,
            (w * od_b).sum(axis=1) / n,
            (h_dominant & stained).sum(axis=1) / n,
            np.sqrt(np.maximum((wt * total).sum(axis=1) / n - (wt.sum(axis=1) / n) ** 2, 0.0)),
        ]
    ).astype(np.float32)
    out[counts == 0] = np.nan
    return out


def measure(distances: NDArray[np.floating[Any]], far_tile: float) -> OodMeasure:
    """Median and far fraction of the finite tile distances (None, None if there are none)."""
    d = np.asarray(distances, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return OodMeasure(None, None)
    return OodMeasure(float(np.median(d)), float((d > far_tile).mean()))


def judge_ood(
    colour_distances: NDArray[np.floating[Any]],
    feature_distances: NDArray[np.floating[Any]] | None,
    policy: OodPolicy,
) -> OodVerdict:
    """The slide's verdict from its tiles' colour (and, if any, feature) distances."""
    colour = measure(colour_distances, policy.colour_limits.far_tile)
    features = (
        None if feature_distances is None else measure(feature_distances, policy.feature_limits.far_tile)
    )
    reasons = []
    if colour.exceeds(policy.colour_limits):
        reasons.append("stain and texture unlike the training slides")
    if features is not None and features.exceeds(policy.feature_limits):
        reasons.append("tissue unlike the training patches")
    return OodVerdict(bool(reasons), colour, features, tuple(reasons))


def describe(ood: Mapping[str, Any] | None) -> str:
    """One line for a summary's ``ood`` entry: what the flag means for the reader."""
    if not ood:
        return ""
    reasons = ood.get("reasons") or []
    why = "; ".join(str(r) for r in reasons) if reasons else "unlike the training data"
    return (
        f"Out of distribution ({why}): the model was trained on lymph-node H&E only, "
        "so this score means little."
    )
