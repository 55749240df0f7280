"""The engine in a worker: one slide (live tiles for the heatmap) or a folder (engine batch).

Both honour the engine's ``cancel`` event and report through signals tagged with a token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, Signal

from engine.batch import SlideJob, SlideOutcome, run_batch
from engine.errors import CancelledError, EquiTriageError
from engine.identity import ResultLock, input_identity
from engine.model import Model
from engine.outputs import write_results
from engine.pipeline import AnalysisParams, TileBatch, analyse_slide
from engine.slide import open_slide
from engine.tiling import plan_grid
from gui.remedies import app_message, outcome_message
from gui.workers import lower_thread_priority

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisRequest:
    """Everything one analysis needs; built on the UI thread, read-only in the worker."""

    token: int
    path: Path
    results_dir: Path
    model: Model
    params: AnalysisParams
    mpp: float | None = None


class AnalysisSignals(QObject):
    planned = Signal(int, object)  # token, TileGrid
    progress = Signal(int, int, int)  # token, done, total
    tiles = Signal(int, object)  # token, TileBatch
    finished = Signal(int, object)  # token, summary dict
    failed = Signal(int, str)
    cancelled = Signal(int)


class AnalysisWorker(QRunnable):
    """Analyse one slide into its result folder, exactly as the CLI does."""

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
        try:
            identity = input_identity(r.path)
            lock = ResultLock(r.results_dir)
            lock.acquire()
        except Exception as exc:
            s.failed.emit(r.token, app_message(exc))
            self.done.set()
            return
        emit: Callable[[], None]
        try:
            with open_slide(r.path, mpp=r.mpp) as slide:
                mpp = slide.require_mpp()
                c = r.model.contract
                s.planned.emit(
                    r.token, plan_grid(slide.dimensions, mpp, c.mpp, c.input_size, r.params.stride_px)
                )

                def progress(done: int, total: int) -> None:
                    s.progress.emit(r.token, done, total)

                def on_batch(batch: TileBatch) -> None:
                    s.tiles.emit(r.token, batch)

                analysis = analyse_slide(slide, r.model, r.params, progress, on_batch, self.cancel)
            if self.cancel.is_set():
                raise CancelledError("analysis cancelled")
            summary = write_results(r.results_dir, analysis, r.model, r.params, identity)
            emit = partial(s.finished.emit, r.token, summary)
        except CancelledError:
            emit = partial(s.cancelled.emit, r.token)
        except Exception as exc:
            if not isinstance(exc, EquiTriageError):
                log.exception("analysis of %s failed", r.path)
            emit = partial(s.failed.emit, r.token, app_message(exc))
        finally:
            lock.release()  # before anyone hears the analysis is over
        try:
            emit()
        finally:
            self.done.set()


class BatchSignals(QObject):
    started = Signal(int, object)  # token, SlideJob
    progress = Signal(int, object, int, int)  # token, SlideJob, done, total
    outcome = Signal(int, object)  # token, SlideOutcome
    finished = Signal(int, bool)  # token, cancelled
    failed = Signal(int, str)


class BatchWorker(QRunnable):
    """``engine.batch.run_batch`` over ``jobs``: resumable, a broken slide never stops the rest."""

    def __init__(
        self,
        token: int,
        jobs: list[SlideJob],
        out_dir: Path,
        model: Model,
        params: AnalysisParams,
        default_mpp: float | None = None,
    ) -> None:
        super().__init__()
        self.token = token
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
            s.started.emit(self.token, job)

        def on_done(outcome: SlideOutcome) -> None:
            if outcome.status == "failed":
                log.warning("%s", outcome_message(outcome))
            s.outcome.emit(self.token, outcome)

        def progress(done: int, total: int) -> None:
            s.progress.emit(self.token, self._current, done, total)

        try:
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
            s.finished.emit(self.token, True)
        except Exception as exc:
            if not isinstance(exc, EquiTriageError):
                log.exception("batch failed")
            s.failed.emit(self.token, app_message(exc))
        else:
            s.finished.emit(self.token, self.cancel.is_set())
        finally:
            self.done.set()
