"""Folder triage: every slide of a folder analysed in turn, resumable, most suspicious first.

The slides are found by :func:`engine.batch.discover_slides` and analysed by
:func:`engine.batch.run_batch` in a worker (:class:`~gui.analysis_worker.BatchWorker`), exactly
as ``equitriage-engine batch`` does; :class:`~gui.batch_state.BatchState` holds the rows and the
:class:`~gui.batch_view.BatchView` shows them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QFileDialog

from engine.batch import SlideJob, discover_slides, holds
from engine.errors import EquiTriageError
from engine.model import Model
from gui.analysis_worker import BatchWorker
from gui.batch_state import BatchRow, listed
from gui.batch_view import COL_SCORE, BatchView
from gui.model_manager import ModelManager
from gui.settings import Settings, analysis_params
from gui.stale import Latest
from gui.workers import CallJob, JobPool


class FolderController(QObject):
    """Runs the folder triage of ``view`` (its buttons, its table) with the model of the settings.

    Reports through ``status(text, ms)``, ``error(title, message)``, ``shown()`` (a folder was
    loaded: show its table) and ``open_requested(slide path, output folder)`` (a double-click).
    """

    status = Signal(str, int)
    error = Signal(str, str)
    shown = Signal()
    open_requested = Signal(object, object)

    def __init__(
        self,
        view: BatchView,
        models: ModelManager,
        settings: Callable[[], Settings],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.view = view
        self.state = view.state
        self.models = models
        self.settings = settings
        self.pool = JobPool(self, 1)
        self.jobs = JobPool(self, 1)  # listing a folder: its files and saved results
        self.listing = Latest()
        self._listing_cancel = threading.Event()  # stops the listing in progress
        self.worker: BatchWorker | None = None
        self._wanted = 0  # counts starts and cancels: the start waiting for the model runs if still wanted
        self._relist_due = False  # the results folder changed during a triage
        view.choose_folder_requested.connect(self.choose)
        view.start_requested.connect(self.start)
        view.cancel_requested.connect(self.cancel)
        view.open_requested.connect(self.open_requested)
        models.failed.connect(lambda _message, _loud: view.set_running(self.running))

    @property
    def running(self) -> bool:
        return self.worker is not None

    def choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.view, "Folder of slides", self.settings().last_folder)
        if folder:
            self.open(Path(folder))

    def open(self, folder: Path) -> None:
        """List the slides of ``folder`` with what is already saved of them; nothing runs yet."""
        if self.running:
            self.error.emit("Triage running", "cancel the running folder triage first")
            return
        settings = self.settings()
        out = Path(settings.output_dir)
        settings.last_folder = str(folder)
        self.status.emit(f"Listing {folder}…", 0)
        self._listing_cancel.set()  # a listing still running is not wanted any more
        cancel = self._listing_cancel = threading.Event()
        job = CallJob(self.listing.ask(), lambda: list_folder(folder, out, cancel))
        job.signals.done.connect(lambda tag, rows: self._listed(tag, folder, out, rows))
        job.signals.failed.connect(self._listing_failed)
        self.jobs.start(job)

    def _listed(self, tag: int, folder: Path, out: Path, rows: list[BatchRow]) -> None:
        if not self.listing.take(tag) or self.running:
            return
        self.state.show_rows(folder, out, rows)
        self.view.set_running(False)
        self.shown.emit()
        self.status.emit(f"{len(rows)} slides in {folder}" if rows else f"No slides in {folder}", 8000)

    def _listing_failed(self, tag: int, message: str) -> None:
        if self.listing.take(tag):
            self.status.emit("", 0)
            self.error.emit("Cannot triage folder", message)

    def start(self) -> None:
        """Analyse every slide of the folder that has no result of exactly this input yet."""
        if self.running or not self.state.rows:
            return
        if self.listing.pending:  # the rows shown are of the folder opened before
            self.status.emit("Still listing the folder…", 5000)
            return
        self.view.set_running(True)
        folder = self.state.folder
        self._wanted += 1  # a cancel while the model loads drops this start
        wanted = self._wanted
        self.models.with_model(lambda model: self._start(model, folder, wanted))

    def results_folder_changed(self) -> None:
        """The settings name another results folder: list the folder again against it (after
        the triage running now, which keeps writing where it started)."""
        self._relist_due = True
        self._relist_if_due()

    def _relist_if_due(self) -> None:
        if self._relist_due and not self.running:
            self._relist_due = False
            if self.state.folder is not None:
                self.open(self.state.folder)

    def _out_dir(self) -> Path:
        return self.state.out_dir or Path(self.settings().output_dir)

    def _start(self, model: Model, folder: Path | None, wanted: int) -> None:
        if wanted != self._wanted:  # cancelled (or asked again) while the model loaded
            return
        if self.running or self.listing.pending or self.state.folder != folder:
            self.view.set_running(self.running)  # another folder was opened while the model loaded
            return
        self.state.mark_queued()
        jobs = [row.job for row in self.state.rows]
        params = analysis_params(self.settings())
        worker = BatchWorker(jobs, self._out_dir(), model, params, self.view.default_mpp_value())
        s = worker.signals
        s.started.connect(self.state.started)
        s.progress.connect(self._progress)
        s.outcome.connect(self.state.finished)
        s.finished.connect(self._finished)
        s.failed.connect(self._failed)
        self.worker = worker
        self.status.emit(f"Triaging {len(jobs)} slides…", 0)
        self.pool.start(worker)

    def cancel(self) -> None:
        self._wanted += 1  # a start still waiting for the model will not run
        if self.worker is not None:
            self.worker.cancel.set()
        else:
            self.view.set_running(False)

    def shutdown(self) -> None:
        """Cancel a running triage and wait for its worker (bounded); it resumes when started again."""
        self.listing.drop()
        self._listing_cancel.set()
        self.cancel()
        self.pool.wait()
        self.jobs.wait()

    def _progress(self, job: SlideJob | None, done: int, total: int) -> None:
        if job is not None:
            self.state.progress(job, done, total)

    def _ended(self) -> None:
        self.worker = None
        self.view.set_running(False)
        QTimer.singleShot(0, self._relist_if_due)  # a results folder changed meanwhile

    def _finished(self, cancelled: bool) -> None:
        self._ended()
        if cancelled:
            self.state.cancelled()
        else:
            self.state.run_ended()
        done, total = self.state.counts()
        failed = sum(r.status == "failed" for r in self.state.rows)
        busy = sum(r.status == "busy" for r in self.state.rows)
        self.status.emit(
            f"Folder triage {'cancelled' if cancelled else 'finished'}: {done} of {total} slides"
            + (f", {failed} could not be analysed" if failed else "")
            + (f", {busy} skipped while another analysis writes their results" if busy else ""),
            15000,
        )
        self.view.table.sortByColumn(COL_SCORE, Qt.SortOrder.DescendingOrder)

    def _failed(self, message: str) -> None:
        self._ended()
        self.state.cancelled()
        self.error.emit("Folder triage stopped", message)


def list_folder(folder: Path, out: Path, cancel: threading.Event) -> list[BatchRow]:
    """The rows of ``folder`` against the results in ``out`` (in a worker: it walks the disk)."""
    if holds(out, folder):  # every slide would be skipped as lying in the results folder
        raise EquiTriageError(
            f"the results folder {out} holds {folder}; choose a results folder outside it in File ▸ Settings"
        )
    return listed(discover_slides(folder, exclude=out), out, cancel)
