"""Qt-free state of a folder triage: one row per slide, updated as the batch runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from engine.batch import SlideJob, SlideOutcome
from engine.errors import CancelledError, EquiTriageError
from engine.identity import made_from
from engine.outputs import read_summary
from engine.summary import SlideSummary
from gui.remedies import outcome_message
from gui.state import Observable

STATUS_ORDER = {"failed": 0, "running": 1, "busy": 2, "queued": 3, "cancelled": 4, "saved": 5, "done": 6}


@dataclass
class BatchRow:
    job: SlideJob
    status: str = "queued"
    done: int = 0
    total: int = 0
    summary: SlideSummary | None = None
    error: str = ""

    @property
    def score(self) -> float | None:
        return None if self.summary is None else self.summary.score

    @property
    def largest_region_mm2(self) -> float | None:
        """Area of the region that made the score (None before issue 16's summaries)."""
        return None if self.summary is None else self.summary.verdict.largest_region_mm2

    @property
    def category(self) -> str:
        return "" if self.summary is None else self.summary.category

    @property
    def model_version(self) -> str:
        return "" if self.summary is None else self.summary.model.version

    @property
    def fraction(self) -> float:
        if self.status in ("done", "saved"):
            return 1.0
        return self.done / self.total if self.total else 0.0


def own_result(out_dir: Path, job: SlideJob) -> tuple[SlideSummary | None, bool]:
    """The result in ``job``'s folder (None: none) and whether it is of the file now at its path
    (the same path and content). Reads the result and fingerprints the slide: for workers."""
    summary = read_summary(out_dir / job.name)
    if summary is None:
        return None, False
    try:
        return summary, made_from(summary.input, job.path)
    except EquiTriageError:  # unreadable now: its analysis will say so
        return summary, False


def listed(jobs: list[SlideJob], out_dir: Path, cancel: threading.Event | None = None) -> list[BatchRow]:
    """A row per job: ``saved`` with its result if ``out_dir`` holds one of exactly this file
    (the same path and content), else ``queued``. Reads every result and fingerprints every
    slide with one, so it belongs in a worker; ``cancel`` stops it (CancelledError)."""
    rows = []
    for job in jobs:
        if cancel is not None and cancel.is_set():
            raise CancelledError("listing cancelled")
        summary, same = own_result(out_dir, job)
        if summary is None:
            rows.append(BatchRow(job))
            continue
        if same:
            rows.append(BatchRow(job, "saved", summary=summary))
        else:
            rows.append(BatchRow(job, error="changed since its analysis: analyse again"))
    return rows


class BatchState(Observable):
    """Rows of a folder; events ``"rows"`` (all replaced), ``"row:<index>"`` (one changed) and
    ``"run"`` (a triage ended)."""

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None
        self.out_dir: Path | None = None
        self.rows: list[BatchRow] = []
        self._index: dict[str, int] = {}
        self._reached: set[int] | None = None  # rows the running triage is done with

    def load(self, folder: Path, out_dir: Path, jobs: list[SlideJob]) -> None:
        """New rows for ``jobs`` (:func:`listed`, which reads the disk: keep it off the UI thread)."""
        self.show_rows(folder, out_dir, listed(jobs, out_dir))

    def show_rows(self, folder: Path, out_dir: Path, rows: list[BatchRow]) -> None:
        self._reached = None
        self.folder = folder
        self.out_dir = out_dir
        self.rows = rows
        self._index = {row.job.name: i for i, row in enumerate(self.rows)}
        self._emit("rows")

    def row_of(self, job: SlideJob) -> int | None:
        return self._index.get(job.name)

    def _changed(self, i: int) -> None:
        self._emit(f"row:{i}")

    def mark_queued(self) -> None:
        """A triage starts: rows it must try again are queued, and its progress counts from 0."""
        self._reached = set()
        for i, row in enumerate(self.rows):
            if row.status in ("failed", "busy", "cancelled", "running"):
                row.status, row.error, row.done, row.total = "queued", "", 0, 0
                self._changed(i)

    def started(self, job: SlideJob) -> None:
        i = self.row_of(job)
        if i is not None:
            self.rows[i].status = "running"
            self.rows[i].error = ""
            self._changed(i)

    def progress(self, job: SlideJob, done: int, total: int) -> None:
        i = self.row_of(job)
        if i is not None:
            row = self.rows[i]
            row.done, row.total = done, total
            self._changed(i)

    def finished(self, outcome: SlideOutcome) -> None:
        i = self.row_of(outcome.job)
        if i is None:
            return
        row = self.rows[i]
        if self._reached is not None:
            self._reached.add(i)
        if outcome.status == "failed":
            row.status, row.error, row.summary = "failed", outcome_message(outcome), None
        elif outcome.status == "busy":  # another process is writing it: what is on disk, if any
            row.status, row.error, row.summary = "busy", outcome_message(outcome), outcome.summary
        else:
            row.status, row.summary = "done", outcome.summary
            row.error = "already analysed with this model" if outcome.status == "cached" else ""
        self._changed(i)

    def cancelled(self) -> None:
        for i, row in enumerate(self.rows):
            if row.status == "running":
                row.status = "cancelled"
                self._changed(i)
        self.run_ended()

    def run_ended(self) -> None:
        self._reached = None
        self._emit("run")

    def counts(self) -> tuple[int, int]:
        """(slides finished, failed or left to another process; all slides). While a triage runs,
        the slides it is done with: a saved result it analyses again does not count until then,
        so the count never goes back."""
        if self._reached is not None:
            return len(self._reached), len(self.rows)
        finished = sum(r.status in ("done", "failed", "saved", "busy") for r in self.rows)
        return finished, len(self.rows)
