"""Background jobs for the window: open a slide (with its thumbnail and saved results), load a model.

Each job runs in a :class:`JobPool` and reports through signals of an object owned by the UI
thread, tagged with the token it was started with, so the window can drop answers it no longer
wants (:class:`gui.stale.Latest`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from engine.batch import SlideJob
from engine.errors import EquiTriageError
from engine.identity import made_from
from engine.model import Model
from engine.model_card import clinical_card
from engine.results import SavedAnalysis, load_saved
from engine.slide import Slide, open_slide
from gui.remedies import app_message

log = logging.getLogger(__name__)

THUMB_SIDE_PX = 1024
ASSOCIATED_SIDE_PX = 400


@dataclass
class OpenedSlide:
    """A slide ready to show; its results live in ``out_dir`` / ``job.name``."""

    job: SlideJob
    out_dir: Path
    slide: Slide
    thumbnail: NDArray[np.uint8]
    associated: dict[str, NDArray[np.uint8]]
    saved: SavedAnalysis | None
    saved_error: str = ""

    @property
    def path(self) -> Path:
        return self.job.path

    @property
    def results_dir(self) -> Path:
        return self.out_dir / self.job.name


class JobSignals(QObject):
    done = Signal(int, object)  # token, result
    failed = Signal(int, str)  # token, message for the user


WORKER_NICE = 5


class _Reaper(QObject):
    """Holds a pool's jobs on the UI thread; a job's ``ended`` reaches it after every signal the
    job sent, and drops it."""

    ended = Signal(object)  # the _Tracked job that has run

    def __init__(self, parent: QObject | None) -> None:
        super().__init__(parent)
        self.jobs: set[_Tracked] = set()
        self.ended.connect(self._drop)  # queued: emitted by worker threads, handled on this one

    @Slot(object)
    def _drop(self, job: _Tracked) -> None:
        self.jobs.discard(job)


class _Tracked(QRunnable):
    """Runs ``job``, then says so (from the worker thread) through ``reaper``."""

    def __init__(self, job: QRunnable, reaper: _Reaper) -> None:
        super().__init__()
        self.job = job
        self._reaper = reaper

    def run(self) -> None:
        try:
            self.job.run()
        finally:
            self._reaper.ended.emit(self)


class JobPool:
    """A thread pool that keeps its jobs alive, so their signals still reach the UI thread.

    A job is kept while it waits and runs, however long, and until the UI thread has handled
    every signal it sent: the job's last act is a signal queued to the UI thread behind all of
    its others, and only that one drops it, on the UI thread, which owns its signal object.
    """

    def __init__(self, parent: QObject | None, threads: int) -> None:
        self.pool = QThreadPool(parent)
        self.pool.setMaxThreadCount(threads)
        self._reaper = _Reaper(parent)

    def start(self, job: QRunnable) -> None:
        tracked = _Tracked(job, self._reaper)
        self._reaper.jobs.add(tracked)
        self.pool.start(tracked)

    def busy(self) -> bool:
        return self.pool.activeThreadCount() > 0

    def wait(self, timeout_ms: int = 30000) -> None:
        self.pool.waitForDone(timeout_ms)


def lower_thread_priority(nice: int = WORKER_NICE) -> None:
    """Make the calling worker thread (and threads it starts) yield the CPU to the UI thread.

    Linux sets nice values per thread; elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except (AttributeError, OSError) as exc:
        log.debug("cannot lower the thread priority: %s", exc)


class SlideOpener(QRunnable):
    """Open ``job``'s slide, read its thumbnail, label/macro images and its saved analysis in ``out_dir``."""

    def __init__(self, token: int, job: SlideJob, out_dir: Path) -> None:
        super().__init__()
        self.token = token
        self.job = job
        self.path = job.path
        self.out_dir = out_dir
        self.signals = JobSignals()

    def run(self) -> None:
        try:
            opened = self.open()
        except Exception as exc:
            if not isinstance(exc, EquiTriageError):
                log.exception("opening %s failed", self.path)
            self.signals.failed.emit(self.token, app_message(exc))
            return
        self.signals.done.emit(self.token, opened)

    def open(self) -> OpenedSlide:
        slide = open_slide(self.path)
        try:
            thumbnail, _ = slide.thumbnail(THUMB_SIDE_PX)
            associated: dict[str, NDArray[np.uint8]] = {}
            for name in ("label", "macro"):
                if name in slide.associated_image_names:
                    try:
                        image = slide.associated_image(name)
                        image.thumbnail((ASSOCIATED_SIDE_PX, ASSOCIATED_SIDE_PX))
                        associated[name] = np.asarray(image.convert("RGB"))
                    except EquiTriageError as exc:
                        log.warning("%s", exc)
        except BaseException:
            slide.close()
            raise
        saved: SavedAnalysis | None = None
        saved_error = ""
        try:
            saved = load_saved(self.out_dir / self.job.name)
            if saved is not None and not made_from(saved.summary.input, self.path):
                saved = None  # made from other content at this path
                saved_error = "its saved result was made from another version of this file; analyse it again"
        except EquiTriageError as exc:
            saved_error = app_message(exc)
        except BaseException:  # unexpected: reported by run(), and the slide is not left open
            slide.close()
            raise
        return OpenedSlide(self.job, self.out_dir, slide, thumbnail, associated, saved, saved_error)


class ModelLoader(QRunnable):
    """Load an ONNX model (``path`` None: the shipped one) and its clinical card, which may read
    ``MODEL_CARD.md`` from disk; ``done`` carries ``(model, card)``."""

    def __init__(self, token: int, path: Path | None, threads: int) -> None:
        super().__init__()
        self.token = token
        self.path = path
        self.threads = threads
        self.signals = JobSignals()

    def run(self) -> None:
        lower_thread_priority()  # inference threads created by the session inherit it
        try:
            model = Model.load(self.path, threads=self.threads)
            card = clinical_card(model)
        except Exception as exc:
            if not isinstance(exc, EquiTriageError):
                log.exception("loading the model failed")
            self.signals.failed.emit(self.token, app_message(exc))
            return
        self.signals.done.emit(self.token, (model, card))


class CallJob(QRunnable):
    """Run ``fn()`` in the pool; ``done`` carries its return value, ``failed`` a user message."""

    def __init__(self, token: int, fn: Callable[[], object]) -> None:
        super().__init__()
        self.token = token
        self.fn = fn
        self.signals = JobSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:
            if not isinstance(exc, EquiTriageError):
                log.exception("background job failed")
            self.signals.failed.emit(self.token, app_message(exc))
            return
        self.signals.done.emit(self.token, result)
