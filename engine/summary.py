"""The one typed, versioned schema of a finished analysis (``summary.json``).

Every reader (engine, CLI, app, report, batch view) goes through :class:`SlideSummary`;
older files are migrated in one place, :func:`migrate`. Fields are grouped: what was analysed
(:class:`InputIdentity`, ``slide``), with what (:class:`ModelInfo`, ``parameters``,
:class:`Thresholds`), and what came out (:class:`TileCounts`, :class:`Verdict`). Keys this
version does not know are kept in ``extra`` and written back unchanged, so a newer writer's
fields survive a round trip.

On disk the verdict's fields stay at the top level (``score``, ``category``,
``tumour_area_mm2``, ``regions``), as in format 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine.contract import TriagePolicy

SUMMARY_FORMAT = 2
STATUS_OK = "ok"
LEGACY_SCORE_METHOD = "top_k_mean"  # how results made before slide-level triage were scored


class SummaryFormatError(ValueError):
    """A summary.json that is not a finished analysis of a format this version reads."""


def _num(value: Any, default: float = 0.0) -> float:
    return default if value is None else float(value)


@dataclass(frozen=True)
class InputIdentity:
    """Which input a result belongs to: resolved path and a content fingerprint."""

    path: str
    kind: str  # "file", or "dicom" for a folder of .dcm files
    fingerprint: str  # sha256 over size, mtime and the first and last MiB of each file

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputIdentity:
        return cls(path=str(data["path"]), kind=str(data["kind"]), fingerprint=str(data["fingerprint"]))


@dataclass(frozen=True)
class ModelInfo:
    version: str
    path: str
    sha256: str
    input_px: int
    mpp: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            version=str(data.get("version", "unknown")),
            path=str(data.get("path", "")),
            sha256=str(data.get("sha256", "")),
            input_px=int(data["input_px"]),
            mpp=float(data["mpp"]),
        )


@dataclass(frozen=True)
class Thresholds:
    """The triage policy a result was made with (the model contract's, at the time)."""

    tile: float
    top_k: int
    high: float
    low: float
    score_method: str = LEGACY_SCORE_METHOD
    smooth_cells: int = 3
    weights: tuple[float, ...] = ()
    calibration: str = ""

    @classmethod
    def from_policy(cls, policy: TriagePolicy) -> Thresholds:
        return cls(
            tile=policy.tile_threshold,
            top_k=policy.top_k,
            high=policy.high_threshold,
            low=policy.low_threshold,
            score_method=policy.score_method,
            smooth_cells=policy.smooth_cells,
            weights=tuple(policy.weights),
            calibration=policy.calibration,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Thresholds:
        """Results written before slide-level triage have no ``score_method``: their score was the
        top-k mean, and their thresholds belong to it."""
        d = TriagePolicy()
        return cls(
            tile=_num(data.get("tile"), d.tile_threshold),
            top_k=int(data.get("top_k", d.top_k)),
            high=_num(data.get("high"), d.high_threshold),
            low=_num(data.get("low"), d.low_threshold),
            score_method=str(data.get("score_method", LEGACY_SCORE_METHOD)),
            smooth_cells=int(data.get("smooth_cells", d.smooth_cells)),
            weights=tuple(float(w) for w in data.get("weights", d.weights)),
            calibration=str(data.get("calibration", "")),
        )

    def policy(self) -> TriagePolicy:
        return TriagePolicy(
            tile_threshold=self.tile,
            top_k=self.top_k,
            high_threshold=self.high,
            low_threshold=self.low,
            score_method=self.score_method,
            smooth_cells=self.smooth_cells,
            weights=self.weights or TriagePolicy().weights,
            calibration=self.calibration,
        )


@dataclass(frozen=True)
class TileCounts:
    """How many tiles: on the grid, with enough tissue to be analysed (``tissue``, the tiles the
    model was run on), given a probability by it (``analysed``: the tissue tiles less any whose
    probability is not a number), and above the tile threshold (``positive``)."""

    grid_cols: int
    grid_rows: int
    grid_total: int
    tissue: int
    analysed: int
    positive: int
    l0_tile_px: float
    l0_stride_px: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TileCounts:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Verdict:
    """What the analysis concluded; stored at the top level of summary.json."""

    score: float | None
    category: str
    tumour_area_mm2: float
    regions: int
    score_method: str = LEGACY_SCORE_METHOD
    largest_region_mm2: float | None = None  # None for results made before slide-level triage

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        score = data.get("score")
        largest = data.get("largest_region_mm2")
        return cls(
            score=None if score is None else float(score),
            category=str(data.get("category", "")),
            tumour_area_mm2=_num(data.get("tumour_area_mm2")),
            regions=int(data.get("regions", 0)),
            score_method=str(data.get("score_method", LEGACY_SCORE_METHOD)),
            largest_region_mm2=None if largest is None else float(largest),
        )


_KNOWN = {
    "format_version",
    "status",
    "created",
    "engine_version",
    "input",
    "slide",
    "model",
    "parameters",
    "thresholds",
    "tiles",
    "heatmap_px_per_cell",
    "timings_s",
    "outputs",
    "out_of_distribution",
    "ood",
    *(f.name for f in fields(Verdict)),
}


@dataclass(frozen=True)
class SlideSummary:
    """A finished analysis of one input, as stored in its result folder's summary.json."""

    created: str
    engine_version: str
    input: InputIdentity | None  # None only for results migrated from format 1
    slide: dict[str, Any]
    model: ModelInfo
    parameters: dict[str, Any]
    thresholds: Thresholds
    tiles: TileCounts
    verdict: Verdict
    heatmap_px_per_cell: int = 1
    timings_s: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    out_of_distribution: bool | None = None  # None: made before the check existed
    ood: dict[str, Any] | None = None  # the out-of-distribution measures behind the flag
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = SUMMARY_FORMAT

    @property
    def score(self) -> float | None:
        return self.verdict.score

    @property
    def category(self) -> str:
        return self.verdict.category

    @property
    def mpp_used(self) -> float | None:
        value = self.slide.get("mpp_used")
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": SUMMARY_FORMAT,
            "status": STATUS_OK,
            "created": self.created,
            "engine_version": self.engine_version,
            "input": None if self.input is None else asdict(self.input),
            "slide": self.slide,
            "model": asdict(self.model),
            "parameters": self.parameters,
            "thresholds": {**asdict(self.thresholds), "weights": list(self.thresholds.weights)},
            "tiles": asdict(self.tiles),
            **asdict(self.verdict),
            "heatmap_px_per_cell": self.heatmap_px_per_cell,
            "timings_s": self.timings_s,
            "outputs": self.outputs,
            "out_of_distribution": self.out_of_distribution,
            "ood": self.ood,
        }
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_json(cls, data: Any) -> SlideSummary:
        """Parse (and migrate) a summary.json document. Raises SummaryFormatError."""
        data = migrate(data)
        try:
            ident = data.get("input")
            ood_flag = data.get("out_of_distribution")
            return cls(
                format_version=SUMMARY_FORMAT,
                created=str(data.get("created", "")),
                engine_version=str(data.get("engine_version", "")),
                input=None if ident is None else InputIdentity.from_json(ident),
                slide=_slide_fields(data.get("slide", {})),
                model=ModelInfo.from_json(data["model"]),
                parameters=dict(data["parameters"]),
                thresholds=Thresholds.from_json(data.get("thresholds", {})),
                tiles=TileCounts.from_json(data["tiles"]),
                verdict=Verdict.from_json(data),
                heatmap_px_per_cell=int(data.get("heatmap_px_per_cell", 1)),
                timings_s={k: float(v) for k, v in data.get("timings_s", {}).items()},
                outputs=[str(o) for o in data.get("outputs", [])],
                out_of_distribution=None if ood_flag is None else bool(ood_flag),
                ood=data.get("ood"),
                extra={k: v for k, v in data.items() if k not in _KNOWN},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SummaryFormatError(f"summary.json lacks or garbles {exc}") from exc


_SLIDE_NUMBERS = ("mpp", "mpp_used", "file_mpp")  # read as numbers by every front end


def _slide_fields(slide: Any) -> dict[str, Any]:
    """The ``slide`` block, its µm/px values checked to be numbers (or absent), so that a hand-
    edited file is refused here rather than failing later in a summary or a caveat."""
    out = dict(slide)
    for key in _SLIDE_NUMBERS:
        value = out.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"slide.{key} {value!r}, not a number")
    return out


def migrate(data: Any) -> dict[str, Any]:
    """Bring a summary.json document of any known format up to :data:`SUMMARY_FORMAT`.

    Format 1 (before input identity): no ``input``; older files also lack ``slide.file_mpp``,
    which is recovered from ``mpp``/``mpp_source`` (``user`` meant an override hid it).
    """
    if not isinstance(data, dict) or data.get("status") != STATUS_OK:
        raise SummaryFormatError("not a finished analysis")
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > SUMMARY_FORMAT or version < 1:
        raise SummaryFormatError(f"summary format {version!r} is not one this version reads")
    if version == 1:
        data = dict(data)
        slide = dict(data.get("slide", {}))
        if "file_mpp" not in slide:
            slide["file_mpp"] = slide.get("mpp") if slide.get("mpp_source") != "user" else None
        data["slide"] = slide
        data["input"] = None
        data["format_version"] = SUMMARY_FORMAT
    return dict(data)
