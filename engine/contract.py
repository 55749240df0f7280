"""The model contract: what a model expects and how its output is read, carried in ONNX metadata.

Training writes it (``training`` imports this module), the engine reads it; nothing else knows
the input size, resolution, normalisation, mask or triage thresholds of a model.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import ContractError
from engine.ood import FeatureStats, OodPolicy

log = logging.getLogger(__name__)

METADATA_KEY = "equitriage.contract"
FORMAT_VERSION = 1


SCORE_METHODS = ("region_logistic", "region_mass", "smoothed_max", "largest_region", "top_k_mean")


DEFAULT_CALIBRATION = (
    "default policy (the contract has none): region_logistic as calibrated for eq-e8 by "
    "benchmarks/slide_triage.py --calibrate"
)


@dataclass(frozen=True)
class TriagePolicy:
    """How tile probabilities become a slide verdict (see ``engine.triage``).

    The defaults are the documented fallback for contracts written before slide-level
    calibration (issue 16), whose ``top_k`` mean thresholds no longer apply: the region score
    and thresholds calibrated for the eq-e8 model on the selection mosaic slides by
    ``benchmarks/slide_triage.py --calibrate``. ``calibration`` records how a contract's own
    values were chosen.
    """

    tile_threshold: float = 0.5
    top_k: int = 10
    high_threshold: float = 0.7331
    low_threshold: float = 0.0999
    score_method: str = "region_logistic"
    smooth_cells: int = 3
    weights: tuple[float, ...] = (-22.6078, 3.1097, 17.5782, 2.4459)
    calibration: str = DEFAULT_CALIBRATION

    @property
    def calibrated(self) -> bool:
        """Whether the policy was calibrated for this model, not the documented fallback."""
        return self.calibration != DEFAULT_CALIBRATION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TriagePolicy:
        """Parse a contract's ``triage`` entry; one without ``score_method`` gets the defaults."""
        if "score_method" not in data:
            if data:
                log.warning("model contract predates slide-level triage; using the default triage policy")
            return cls()
        values = dict(data)
        if "weights" in values:
            values["weights"] = tuple(float(w) for w in values["weights"])
        return cls(**values)

    def category(self, score: float | None) -> str:
        """Triage category of a slide score; ``None`` (no tissue analysed) is its own category."""
        if score is None:
            return "no tissue"
        if score >= self.high_threshold:
            return "high suspicion"
        if score >= self.low_threshold:
            return "intermediate"
        return "low suspicion"


@dataclass(frozen=True)
class ModelContract:
    """Everything the engine needs to feed a model and read its answer."""

    input_size: int
    mpp: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mask_radius: float
    classes: tuple[str, ...]
    positive_class: str
    model_version: str
    triage: TriagePolicy = field(default_factory=TriagePolicy)
    input_name: str = "input"
    output_name: str = "logits"
    info: Mapping[str, Any] = field(default_factory=dict)
    features_name: str | None = None
    feature_stats: FeatureStats | None = None
    ood: OodPolicy = field(default_factory=OodPolicy)

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ContractError("invalid model contract: " + "; ".join(problems))

    @property
    def positive_index(self) -> int:
        """Index of the tumour class in the model's output."""
        return self.classes.index(self.positive_class)

    def to_json(self) -> str:
        """Serialise for the ONNX ``metadata_props`` entry."""
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        data["info"] = dict(self.info)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        """Parse and validate; raise :class:`ContractError` with the reason."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"model contract is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ContractError("model contract is not a JSON object")
        version = data.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ContractError(
                f"model contract format {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            triage = TriagePolicy.from_dict(data.pop("triage", {}))
            stats = data.pop("feature_stats", None)
            ood = OodPolicy.from_dict(data.pop("ood", {}))
            return cls(
                input_size=int(data.pop("input_size")),
                mpp=float(data.pop("mpp")),
                mean=_triple(data.pop("mean")),
                std=_triple(data.pop("std")),
                mask_radius=float(data.pop("mask_radius")),
                classes=tuple(str(c) for c in data.pop("classes")),
                positive_class=str(data.pop("positive_class")),
                model_version=str(data.pop("model_version")),
                triage=triage,
                feature_stats=None if stats is None else FeatureStats.from_dict(stats),
                ood=ood,
                **data,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(f"model contract is incomplete or malformed ({exc})") from exc

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ModelContract:
        """Read the contract from an ONNX model's custom metadata map."""
        text = metadata.get(METADATA_KEY)
        if text is None:
            raise ContractError(f"the model has no EquiTriage contract (metadata key {METADATA_KEY!r})")
        return cls.from_json(text)


def _triple(value: Any) -> tuple[float, float, float]:
    items = [float(v) for v in value]
    if len(items) != 3:
        raise ValueError("mean and std need three values (R, G, B)")
    return (items[0], items[1], items[2])


def _problems(c: ModelContract) -> list[str]:
    out: list[str] = []
    if c.input_size < 3 or c.input_size % 2 == 0:
        out.append(f"input_size must be odd and >= 3, got {c.input_size}")
    if not (math.isfinite(c.mpp) and c.mpp > 0):
        out.append(f"mpp must be a positive number, got {c.mpp}")
    if any(not (math.isfinite(s) and s > 0) for s in c.std):
        out.append("std values must be positive")
    if not (0 < c.mask_radius <= c.input_size / 2 * math.sqrt(2)):
        out.append(f"mask_radius {c.mask_radius} does not fit an input of {c.input_size} px")
    if len(c.classes) < 2:
        out.append("classes needs at least two names")
    if c.positive_class not in c.classes:
        out.append(f"positive_class {c.positive_class!r} is not one of {list(c.classes)}")
    t = c.triage
    if not (0 <= t.low_threshold <= t.high_threshold <= 1 and 0 <= t.tile_threshold <= 1):
        out.append("triage thresholds must satisfy 0 <= low <= high <= 1")
    if t.top_k < 1:
        out.append("triage top_k must be >= 1")
    if t.score_method not in SCORE_METHODS:
        out.append(f"triage score_method {t.score_method!r} is not one of {list(SCORE_METHODS)}")
    if t.smooth_cells < 1 or t.smooth_cells % 2 == 0:
        out.append("triage smooth_cells must be odd and >= 1")
    if t.score_method == "region_logistic" and len(t.weights) != 4:
        out.append("triage region_logistic needs 4 weights")
    fs = c.feature_stats
    if fs is not None:
        k, dim = len(fs.variances), len(fs.mean)
        if len(fs.components) != k or any(len(row) != dim for row in fs.components):
            out.append(f"feature_stats components must be {k} x {dim}")
        if any(not v > 0 for v in fs.variances):
            out.append("feature_stats variances must be positive")
        if c.features_name is None:
            out.append("feature_stats needs features_name, the output they describe")
    return out
