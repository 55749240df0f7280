"""The engine in a worker thread: one slide (:func:`engine.batch.analyse_file`, the command line's
own path) or a folder (:func:`engine.batch.run_batch`).

The workers only adapt: the engine's callbacks become Qt signals tagged with a token, the
``cancel`` event is the engine's, and an error becomes a message in the app's words.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, Signal

from engine.batch import SlideJob, SlideOutcome, analyse_file, run_batch
from engine.errors import CancelledError, EquiTriageError
from engine.model import Model
from engine.outputs import check_writable
from engine.pipeline import AnalysisParams, TileBatch, TilePlan
from gui.batch_state import own_result
from gui.remedies import app_message, outcome_message
from gui.workers import lower_thread_priority

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisRequest:
    """Everything one analysis needs; built on the UI thread, read-only in the worker.

    ``mpp`` overrides the slide's µm/px (one the user typed in); results go to ``out_dir`` /
    ``job.name``, as :func:`engine.batch.analyse_file` writes them.
    """

    token: int
    job: SlideJob
    out_dir: Path
    model: Model
    params: AnalysisParams
    mpp: float | None = None

    @property
    def results_dir(self) -> Path:
        return self.out_dir / self.job.name


class AnalysisSignals(QObject):
    planned = Signal(int, object)  # token, TileGrid
    progress = Signal(int, int, int)  # token, done, total
    tiles = Signal(int, object)  # token, TileBatch
    finished = Signal(int, object)  # token, SlideSummary
    failed = Signal(int, str)
    cancelled = Signal(int)


class AnalysisWorker(QRunnable):
    """Analyse one slide into its result folder with :func:`engine.batch.analyse_file`.

    The result folder's lock is released before the end is announced.
    """

    def __init__(self, request: AnalysisRequest) -> None:
        super().__init__()
        self.request = request
        self.cancel = threading.Event()
        self.signals = AnalysisSignals()
        self.done = threading.Event()

    def run(self) -> None:
        r = self.request
        s = self.signals
        lower_thread_priority()  # the UI thread comes first; read threads inherit this

        def on_plan(plan: TilePlan) -> None:
            s.planned.emit(r.token, plan.grid)

        def progress(done: int, total: int) -> None:
            s.progress.emit(r.token, done, total)

        def on_batch(batch: TileBatch) -> None:
            s.tiles.emit(r.token, batch)

        emit: Callable[[], None]
        try:
            check_writable(r.out_dir)  # created, and proved writable, here: never on the UI thread
            summary = analyse_file(
                r.job,
                r.out_dir,
                r.model,
                r.params,
                mpp=r.mpp,
                progress=progress,
                on_batch=on_batch,
                cancel=self.cancel,
                on_plan=on_plan,
            )
            emit = partial(s.finished.emit, r.token, summary)
        except CancelledError:
            emit = partial(s.cancelled.emit, r.token)
        except Exception as exc:
            if not isinstance(exc, EquiTriageError):
                log.exception("analysis of %s failed", r.job.path)
            emit = partial(s.failed.emit, r.token, app_message(exc))
        try:
            emit()
        finally:
            self.done.set()


class BatchSignals(QObject):
    started = Signal(object)  # SlideJob
    progress = Signal(object, int, int)  # SlideJob, done, total
    outcome = Signal(object)  # SlideOutcome
    finished = Signal(bool)  # cancelled
    failed = Signal(str)


class BatchWorker(QRunnable):
    """``engine.batch.run_batch`` over ``jobs``: resumable, a broken slide never stops the rest."""

    def __init__(
        self,
        jobs: list[SlideJob],
        out_dir: Path,
        model: Model,
        params: AnalysisParams,
        default_mpp: float | None = None,
    ) -> None:
        super().__init__()
        self.default_mpp = default_mpp
        self.jobs = jobs
        self.out_dir = out_dir
        self.model = model
        self.params = params
        self.cancel = threading.Event()
        self.signals = BatchSignals()
        self.done = threading.Event()
        self._current: SlideJob | None = None

    def run(self) -> None:
        s = self.signals
        lower_thread_priority()

        def on_start(job: SlideJob) -> None:
            self._current = job
            s.started.emit(job)

        def on_done(outcome: SlideOutcome) -> None:
            if outcome.status in ("failed", "busy"):
                log.warning("%s", outcome_message(outcome))
            if outcome.status == "busy":  # another process writes it: its result on disk now, if
                summary, same = own_result(self.out_dir, outcome.job)  # of this very file
                outcome = replace(outcome, summary=summary if same else None)
            s.outcome.emit(outcome)

        def progress(done: int, total: int) -> None:
            s.progress.emit(self._current, done, total)

        try:
            check_writable(self.out_dir)
            run_batch(
                self.jobs,
                self.out_dir,
                self.model,
                self.params,
                on_start=on_start,
                on_done=on_done,
                progress=progress,
                cancel=self.cancel,
                default_mpp=self.default_mpp,
            )
        except CancelledError:
            s.finished.emit(True)
        except Exception as exc:
            if not isinstance(exc, EquiTriageError):
                log.exception("batch failed")
            s.failed.emit(app_message(exc))
        else:
            s.finished.emit(self.cancel.is_set())
        finally:
            self.done.set()
