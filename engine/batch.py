"""Analyse slides into result folders, one at a time, resumable; a failure never stops the rest."""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EquiTriageError, Remedy, SlideNotFoundError, phrase
from engine.model import Model
from engine.outputs import read_summary, write_results, write_text_atomic
from engine.pipeline import AnalysisParams, BatchFn, ProgressFn, analyse_slide
from engine.slide import open_slide, slide_name

log = logging.getLogger(__name__)

BATCH_SUMMARY = "summary.csv"
# What OpenSlide reads, plus plain images. A folder of .dcm files is one DICOM slide.
SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".tif",
        ".tiff",
        ".ndpi",
        ".vms",
        ".vmu",
        ".scn",
        ".mrxs",
        ".svslide",
        ".bif",
        ".dcm",
        ".png",
        ".jpg",
        ".jpeg",
    }
)


@dataclass(frozen=True)
class SlideJob:
    """A slide to analyse and the name of its result folder."""

    path: Path
    name: str


@dataclass(frozen=True)
class SlideOutcome:
    """One row of the batch summary; a failure keeps what went wrong and the remedy apart."""

    job: SlideJob
    status: str  # "ok", "cached" or "failed"
    summary: dict[str, Any] | None = None
    error: str = ""  # what went wrong, without advice
    remedy: Remedy | None = None

    @classmethod
    def failed(cls, job: SlideJob, exc: EquiTriageError) -> SlideOutcome:
        return cls(job, "failed", error=exc.problem, remedy=exc.remedy)

    @property
    def score(self) -> float | None:
        return None if self.summary is None else self.summary.get("score")

    def message(self, remedies: Mapping[Remedy, str] | None = None) -> str:
        """The error and its remedy in one line, worded from ``remedies`` (a front end's table)."""
        return phrase(self.error, self.remedy, remedies) if self.error else ""


def discover_slides(folder: Path, recursive: bool = False, exclude: Path | None = None) -> list[SlideJob]:
    """Slides in ``folder`` (sorted), skipping anything under ``exclude`` (the output folder)."""
    if not folder.exists():
        raise SlideNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise SlideNotFoundError(f"{folder}: is a file, not a folder of slides", Remedy.USE_FOLDER)
    pattern = "**/*" if recursive else "*"
    excluded = exclude.resolve() if exclude else None
    files = sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file()
        and p.suffix.lower() in SLIDE_SUFFIXES
        and not p.name.startswith(".")
        and not (excluded and p.resolve().is_relative_to(excluded))
    )
    jobs: list[SlideJob] = []
    dicom_dirs: set[Path] = set()
    for path in files:
        rel = path.relative_to(folder)
        if path.suffix.lower() == ".dcm":
            if path.parent in dicom_dirs:
                continue
            dicom_dirs.add(path.parent)
            parts = rel.parent.parts or (folder.resolve().name,)
        else:
            parts = (*rel.parent.parts, slide_name(path))
        jobs.append(SlideJob(path, "__".join(parts)))
    return _unique_names(jobs)


def _unique_names(jobs: list[SlideJob]) -> list[SlideJob]:
    seen: dict[str, int] = {}
    for job in jobs:
        seen[job.name] = seen.get(job.name, 0) + 1
    return [
        SlideJob(j.path, f"{j.name}{j.path.suffix.lower().replace('.', '_')}") if seen[j.name] > 1 else j
        for j in jobs
    ]


def is_finished(
    summary: dict[str, Any] | None,
    model: Model,
    params: AnalysisParams,
    mpp: float | None,
    default_mpp: float | None = None,
) -> bool:
    """Whether a stored analysis was made by this model with these parameters and µm/px."""
    if summary is None:
        return False
    same_model = summary.get("model", {}).get("sha256") == model.sha256
    stored = summary.get("parameters", {})
    wanted = params.as_dict(model.contract.input_size)
    same_params = all(stored.get(k) == v for k, v in wanted.items())
    return same_model and same_params and _same_mpp(summary.get("slide", {}), mpp, default_mpp)


def _same_mpp(slide: dict[str, Any], mpp: float | None, default_mpp: float | None) -> bool:
    """Whether a run with ``mpp`` (override) and ``default_mpp`` would use the stored µm/px.

    With neither given, any stored µm/px is accepted (the file's own, or one given before).
    """
    used = slide.get("mpp_used")
    if mpp is not None:
        return bool(used == mpp)
    if default_mpp is None:
        return True
    if "file_mpp" in slide:
        file_mpp = slide["file_mpp"]
    else:  # summaries written before file_mpp was recorded: "user" means an override hid it
        file_mpp = slide.get("mpp") if slide.get("mpp_source") != "user" else None
    return bool(used == (file_mpp if file_mpp is not None else default_mpp))


def analyse_file(
    job: SlideJob,
    out_dir: Path,
    model: Model,
    params: AnalysisParams,
    mpp: float | None = None,
    progress: ProgressFn | None = None,
    on_batch: BatchFn | None = None,
    cancel: threading.Event | None = None,
    default_mpp: float | None = None,
) -> dict[str, Any]:
    """Open, analyse and write one slide; return its summary. Raises EquiTriageError.

    ``mpp`` overrides the slide's µm/px; ``default_mpp`` is used only if the slide records none.
    """
    with open_slide(job.path, mpp=mpp, default_mpp=default_mpp) as slide:
        analysis = analyse_slide(slide, model, params, progress, on_batch, cancel)
    summary = write_results(out_dir / job.name, analysis, model, params)
    log.info("%s: score %s, %s", job.name, summary["score"], summary["category"])
    return summary


def run_batch(
    jobs: Iterable[SlideJob],
    out_dir: Path,
    model: Model,
    params: AnalysisParams,
    mpp: float | None = None,
    on_start: Callable[[SlideJob], None] | None = None,
    on_done: Callable[[SlideOutcome], None] | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    default_mpp: float | None = None,
) -> list[SlideOutcome]:
    """Analyse each job in turn, skipping finished ones; ``summary.csv`` is rewritten after each.

    A slide that fails becomes a ``failed`` outcome (logged at debug level: the caller words it).
    """
    outcomes: list[SlideOutcome] = []
    for job in jobs:
        if on_start:
            on_start(job)
        stored = read_summary(out_dir / job.name)
        if is_finished(stored, model, params, mpp, default_mpp):
            outcome = SlideOutcome(job, "cached", stored)
        else:
            try:
                summary = analyse_file(
                    job, out_dir, model, params, mpp, progress, cancel=cancel, default_mpp=default_mpp
                )
                outcome = SlideOutcome(job, "ok", summary)
            except EquiTriageError as exc:
                if cancel is not None and cancel.is_set():
                    raise
                log.debug("%s failed: %s", job.name, exc)
                outcome = SlideOutcome.failed(job, exc)
        outcomes.append(outcome)
        write_text_atomic(out_dir / BATCH_SUMMARY, summary_csv(outcomes))
        if on_done:
            on_done(outcome)
    return outcomes


def ranked(outcomes: Iterable[SlideOutcome]) -> list[SlideOutcome]:
    """Most suspicious first; slides without a score (no tissue, failed) last."""
    return sorted(outcomes, key=lambda o: (o.score is None, -(o.score or 0.0), o.job.name))


def summary_csv(outcomes: Iterable[SlideOutcome]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "rank",
            "slide",
            "status",
            "score",
            "category",
            "tumour_area_mm2",
            "tiles_analysed",
            "model_version",
            "error",
            "path",
            "score_method",
            "largest_region_mm2",
            "out_of_distribution",
            "mpp_used",
            "mpp_origin",
        ]
    )
    for rank, o in enumerate(ranked(outcomes), start=1):
        s = o.summary or {}
        writer.writerow(
            [
                rank,
                o.job.name,
                o.status,
                "" if s.get("score") is None else s["score"],
                s.get("category", ""),
                s.get("tumour_area_mm2", ""),
                s.get("tiles", {}).get("analysed", ""),
                s.get("model", {}).get("version", ""),
                o.message(),
                str(o.job.path),
                s.get("score_method", ""),
                s.get("largest_region_mm2", ""),
                "" if s.get("out_of_distribution") is None else str(bool(s["out_of_distribution"])).lower(),
                s.get("slide", {}).get("mpp_used", ""),
                s.get("slide", {}).get("mpp_origin", ""),
            ]
        )
    return buf.getvalue()
