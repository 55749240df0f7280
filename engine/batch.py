"""Analyse slides into result folders, one at a time, resumable; a failure never stops the rest."""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.caveats import short_flags
from engine.errors import (
    CancelledError,
    EquiTriageError,
    OutputError,
    Remedy,
    ResultLockedError,
    SlideNotFoundError,
    SlideReadError,
    phrase,
)
from engine.identity import ResultLock, display_name, input_identity, results_name
from engine.model import Model
from engine.outputs import read_summary, write_results, write_text_atomic
from engine.pipeline import AnalysisParams, BatchFn, PlanFn, ProgressFn, analyse_slide
from engine.slide import SLIDE_SUFFIXES, open_slide
from engine.summary import InputIdentity, SlideSummary

log = logging.getLogger(__name__)

BATCH_SUMMARY = "summary.csv"


@dataclass(frozen=True)
class SlideJob:
    """A slide to analyse and the name of its result folder (:func:`job_for`)."""

    path: Path
    name: str

    @functools.cached_property
    def label(self) -> str:
        """The slide's human name (file name without extension, or the DICOM folder's name).
        Telling a DICOM folder from a file looks at the disk: :func:`job_for` does it once."""
        return display_name(self.path)


def saved_job(name: str, identity: InputIdentity | None) -> SlideJob:
    """The job of a result found in the output folder, named by the input it records: a DICOM
    slide by its folder's whole name (``S-2023.05.01``, not a file name's stem), even when the
    folder is gone."""
    job = SlideJob(Path(identity.path) if identity is not None else Path(name), name)
    if identity is not None and identity.kind == "dicom":
        job.__dict__["label"] = job.path.name  # what the cached ``label`` would not know
    return job


def job_for(path: Path) -> SlideJob:
    """The job of one input: its result folder is named by :func:`engine.identity.results_name`.
    Both look at the disk (is a ``.dcm`` path a folder?): call it off a UI thread."""
    job = SlideJob(path, results_name(path))
    _ = job.label  # known from now on, wherever the job is shown
    return job


def unique_jobs(paths: Iterable[Path]) -> list[SlideJob]:
    """One job per result folder, in the order the paths first name it.

    Paths that name one input (a path given twice; the ``.dcm`` files of one DICOM folder, or a
    dangling ``.dcm`` link beside them) give one job, standing on the first of them that is a
    file: a broken entry never takes over a readable slide's result.
    """
    jobs: dict[str, SlideJob] = {}
    for job in map(job_for, paths):
        kept = jobs.get(job.name)
        if kept is None or (not kept.path.is_file() and job.path.is_file()):
            jobs[job.name] = job
    return list(jobs.values())


@dataclass(frozen=True)
class SlideOutcome:
    """One row of the batch summary; a failure keeps what went wrong and the remedy apart."""

    job: SlideJob
    status: str  # "ok", "cached", "failed", or "busy" (another process is writing its result)
    summary: SlideSummary | None = None
    error: str = ""  # what went wrong, without advice
    remedy: Remedy | None = None

    @classmethod
    def failed(cls, job: SlideJob, exc: EquiTriageError) -> SlideOutcome:
        return cls(job, "failed", error=exc.problem, remedy=exc.remedy)

    @property
    def score(self) -> float | None:
        return None if self.summary is None else self.summary.score

    def message(self, remedies: Mapping[Remedy, str] | None = None) -> str:
        """The error and its remedy in one line, worded from ``remedies`` (a front end's table)."""
        return phrase(self.error, self.remedy, remedies) if self.error else ""


def discover_slides(folder: Path, recursive: bool = False, exclude: Path | None = None) -> list[SlideJob]:
    """Slides in ``folder`` (sorted), skipping anything under ``exclude`` (the output folder).

    A folder of ``.dcm`` files is one slide. Each job's result folder is :func:`job_for`'s.
    """
    if not folder.exists():
        raise SlideNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise SlideNotFoundError(f"{folder}: is a file, not a folder of slides", Remedy.USE_FOLDER)
    try:  # glob yields nothing from a folder it may not read: say why instead of "no slides"
        with os.scandir(folder):
            pass
    except OSError as exc:
        raise SlideNotFoundError(f"{folder}: cannot be listed ({exc.strerror or exc})") from exc
    pattern = "**/*" if recursive else "*"
    try:
        excluded = exclude.resolve() if exclude else None
    except (OSError, RuntimeError):  # the output folder's own path loops: it holds no slide
        excluded = None
    try:
        candidates = sorted(folder.glob(pattern))
    except OSError as exc:  # e.g. a symlink loop deep in a recursive walk
        raise SlideNotFoundError(f"{folder}: cannot be listed ({exc.strerror or exc})") from exc
    slides = (
        path
        for path in candidates
        if path.suffix.lower() in SLIDE_SUFFIXES
        and not path.name.startswith(".")
        and not (excluded and _resolves_under(path, excluded))
    )
    return unique_jobs(slides)  # a folder named x.svs or a dangling link fails as that slide


def holds(outer: Path, inner: Path) -> bool:
    """Whether folder ``inner`` is ``outer`` or lies inside it (links resolved): an output folder
    that holds the slide folder would hide every slide from :func:`discover_slides`."""
    try:
        return _resolves_under(inner, outer.resolve())
    except (OSError, RuntimeError):  # the output folder's own path loops: it holds nothing
        return False


def _resolves_under(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder)
    except (OSError, RuntimeError):  # a symlink loop: not ours to exclude, it fails as a slide
        return False


def is_finished(
    summary: SlideSummary | None,
    identity: InputIdentity,
    model: Model,
    params: AnalysisParams,
    mpp: float | None,
    default_mpp: float | None = None,
) -> bool:
    """Whether a stored analysis is of exactly this input, by this model, with these parameters."""
    if summary is None or summary.input != identity:
        return False
    same_model = summary.model.sha256 == model.sha256
    wanted = params.as_dict(model.contract.input_size)
    same_params = all(summary.parameters.get(k) == v for k, v in wanted.items())
    return same_model and same_params and _same_mpp(summary.slide, mpp, default_mpp)


def _same_mpp(slide: dict[str, Any], mpp: float | None, default_mpp: float | None) -> bool:
    """Whether a run with ``mpp`` (override) and ``default_mpp`` would use the stored µm/px.

    With neither given, a slide whose file records its µm/px must have been analysed at it; one
    whose file records none keeps the µm/px given before (this run has none to use instead).
    """
    used = slide.get("mpp_used")
    if mpp is not None:
        return bool(used == mpp)
    file_mpp = slide.get("file_mpp")
    if file_mpp is not None:
        return bool(used == file_mpp)
    return default_mpp is None or bool(used == default_mpp)


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
    identity: InputIdentity | None = None,
    *,
    on_plan: PlanFn | None = None,
) -> SlideSummary:
    """Open, analyse and write one slide; return its summary. Raises EquiTriageError.

    This is the one path of a slide into its result folder: the command line, the batch, every
    cluster worker and the app's analysis all run it. ``mpp`` overrides the slide's µm/px;
    ``default_mpp`` is used only if the slide records none. ``on_plan``, ``progress`` and
    ``on_batch`` report as :func:`engine.pipeline.analyse_slide` does; ``cancel`` stops it with
    :class:`CancelledError` at any point before the writing starts. The result folder is locked
    (:class:`ResultLock`) from the start of the analysis to the end of writing, so another
    process never writes it at the same time.
    """
    identity = identity or input_identity(job.path)
    with ResultLock(out_dir / job.name) as lock:
        with open_slide(job.path, mpp=mpp, default_mpp=default_mpp) as slide:
            analysis = analyse_slide(slide, model, params, progress, on_batch, cancel, on_plan=on_plan)
        if cancel is not None and cancel.is_set():  # after the last tile: still nothing written
            raise CancelledError("analysis cancelled")
        if identity != input_identity(job.path):
            raise SlideReadError(f"{job.path}: changed while it was analysed", Remedy.ANALYSE_AGAIN)
        lock.check()  # its lease may have run out while this process stalled
        summary = write_results(out_dir / job.name, analysis, model, params, identity)
    log.info("%s: score %s, %s", job.name, summary.score, summary.category)
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
    resume: bool = True,
) -> list[SlideOutcome]:
    """Analyse each job in turn; ``summary.csv`` is rebuilt from the folder after each slide
    analysed (or failed) and at the end, so resuming a large batch of finished slides reads the
    folder once, not once per slide.

    With ``resume`` a stored result is reused only if it is of exactly this input (path and
    content fingerprint), model, parameters and µm/px; without it every slide is analysed again
    (its old result stays until the new one is written). A slide that fails becomes a ``failed``
    outcome (logged at debug level: the caller words it); a cancel (``cancel`` set) raises.
    """
    outcomes: list[SlideOutcome] = []
    stale = False  # summary.csv lags behind the folder
    for job in jobs:
        if cancel is not None and cancel.is_set():
            raise CancelledError("batch cancelled")
        if on_start:
            on_start(job)
        outcome = analyse_job(job, out_dir, model, params, mpp, progress, cancel, default_mpp, resume)
        outcomes.append(outcome)
        # a reused result changes nothing in the folder: its status goes with the next rebuild
        stale = outcome.status == "cached" or not rebuild_batch_summary(out_dir, outcomes)
        if on_done:
            on_done(outcome)
    if stale:
        write_batch_summary(out_dir, outcomes)
    return outcomes


def analyse_job(
    job: SlideJob,
    out_dir: Path,
    model: Model,
    params: AnalysisParams,
    mpp: float | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    default_mpp: float | None = None,
    resume: bool = True,
) -> SlideOutcome:
    """One slide of a batch: reuse its stored result (``resume``) or analyse it; never raises for
    a slide's own failure (it becomes a ``failed`` outcome), only for a cancel or a broken output
    folder. The local batch and every Dask worker (:mod:`engine.cluster`) run this same function.
    """
    try:
        identity = input_identity(job.path)
        if resume:
            stored = read_summary(out_dir / job.name)
            if is_finished(stored, identity, model, params, mpp, default_mpp):
                return SlideOutcome(job, "cached", stored)
        summary = analyse_file(
            job, out_dir, model, params, mpp, progress, None, cancel, default_mpp, identity
        )
        return SlideOutcome(job, "ok", summary)
    except Exception as exc:
        if cancel is not None and cancel.is_set():
            if isinstance(exc, CancelledError):
                raise
            raise CancelledError("batch cancelled") from exc  # the cancel, not the slide, ends it
        if isinstance(exc, ResultLockedError):
            log.debug("%s: %s", job.name, exc)
            return SlideOutcome(job, "busy", error=exc.problem, remedy=exc.remedy)
        if isinstance(exc, OutputError):
            raise  # the output folder itself is broken: no later slide can be written either
        if not isinstance(exc, EquiTriageError):  # a bug, or a slide that exhausts memory: it
            log.debug("%s: unexpected error", job.name, exc_info=True)  # fails alone, as on Dask
            exc = EquiTriageError(f"{job.path}: unexpected error ({type(exc).__name__}: {exc})")
        log.debug("%s failed: %s", job.name, exc)
        return SlideOutcome.failed(job, exc)


def finished_in(out_dir: Path) -> list[tuple[str, SlideSummary]]:
    """Every finished analysis in ``out_dir`` (one level down), as (folder name, summary)."""
    found: list[tuple[str, SlideSummary]] = []
    try:
        folders = sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for folder in folders:
        summary = read_summary(folder)
        if summary is not None:
            found.append((folder.name, summary))
    return found


def folder_view(out_dir: Path, outcomes: Iterable[SlideOutcome] = ()) -> list[SlideOutcome]:
    """The whole output folder as outcomes: every finished result there, plus this run's failures
    and the slides another process was writing (when no result of theirs is there yet).

    A failure of this run hides an older result of the same slide (it no longer stands); a slide
    another process was writing hides nothing.
    """
    failed = {o.job.name: o for o in outcomes if o.status == "failed"}
    busy = {o.job.name: o for o in outcomes if o.status == "busy"}
    current = {o.job.name: o for o in outcomes if o.status not in ("failed", "busy")}
    view: list[SlideOutcome] = list(failed.values())
    for name, summary in finished_in(out_dir):
        busy.pop(name, None)  # another process's finished result stands
        if name in failed:
            continue
        if name in current:
            view.append(SlideOutcome(current[name].job, current[name].status, summary))
            continue
        view.append(SlideOutcome(saved_job(name, summary.input), "saved", summary))
    return view + list(busy.values())


def write_batch_summary(out_dir: Path, outcomes: Iterable[SlideOutcome] = ()) -> None:
    """Rebuild ``summary.csv`` from every finished result in ``out_dir`` (atomically)."""
    write_text_atomic(out_dir / BATCH_SUMMARY, summary_csv(folder_view(out_dir, outcomes)))


def rebuild_batch_summary(out_dir: Path, outcomes: Iterable[SlideOutcome] = ()) -> bool:
    """Rebuild ``summary.csv`` during a batch; a failure (a spreadsheet holding it open on
    Windows) is a warning, not the end of the batch: every result is complete on its own, and the
    rebuild is tried again after the next slide and at the end, where it must succeed."""
    try:
        write_batch_summary(out_dir, outcomes)
    except OutputError as exc:
        log.warning("%s; it is rebuilt again after the next slide", exc.problem)
        return False
    return True


def ranked(outcomes: Iterable[SlideOutcome]) -> list[SlideOutcome]:
    """Most suspicious first; slides without a score (no tissue, failed) last."""
    return sorted(outcomes, key=lambda o: (o.score is None, -(o.score or 0.0), o.job.name))


CSV_COLUMNS = (
    "rank",
    "slide",
    "status",
    "score",
    "category",
    "tumour_area_mm2",
    "tiles_analysed",
    "model_version",
    "error",
    "folder",
    "path",
    "score_method",
    "largest_region_mm2",
    "out_of_distribution",
    "mpp_used",
    "mpp_origin",
    "caveats",
)


def _csv_row(rank: int, o: SlideOutcome) -> list[object]:
    """One ``summary.csv`` row; a value that is missing (no summary, or None in it) is empty."""
    values: dict[str, object] = {
        "rank": rank,
        "slide": o.job.label,
        "status": o.status,
        "error": o.message(),
        "folder": o.job.name,
        "path": str(o.job.path),
    }
    s = o.summary
    if s is not None:
        ood = s.out_of_distribution
        values |= {
            "score": s.score,
            "category": s.category,
            "tumour_area_mm2": s.verdict.tumour_area_mm2,
            "tiles_analysed": s.tiles.analysed,
            "model_version": s.model.version,
            "score_method": s.verdict.score_method,
            "largest_region_mm2": s.verdict.largest_region_mm2,
            "out_of_distribution": None if ood is None else str(ood).lower(),
            "mpp_used": s.slide.get("mpp_used"),
            "mpp_origin": s.slide.get("mpp_origin"),
            "caveats": short_flags(s),
        }
    return ["" if values.get(c) is None else values[c] for c in CSV_COLUMNS]


def summary_csv(outcomes: Iterable[SlideOutcome]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, o in enumerate(ranked(outcomes), start=1):
        writer.writerow(_csv_row(rank, o))
    return buf.getvalue()
