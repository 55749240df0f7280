"""Exports of the result shown: the file dialog, the writing (:mod:`gui.exports`), and its errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from engine.errors import EquiTriageError, OutputError, ResultsError
from engine.results import SavedAnalysis
from gui import exports
from gui.model_manager import ModelManager
from gui.settings import Settings
from gui.state import OverlayState
from gui.workers import CallJob, JobPool, OpenedSlide

Shown = tuple[OpenedSlide, SavedAnalysis]  # the open slide and the result shown for it


class ExportController(QObject):
    """Writes an export (``overlay``, ``geojson``, ``csv`` or ``report``) of ``shown()``.

    The overlay and the regions of the result shown are exported as displayed (opacity,
    threshold) when the export is asked for, and written in a worker. Reports through
    ``status(text, ms)``, ``error(title, message)`` and ``ended(path)``; dialogs open over
    ``window``.
    """

    status = Signal(str, int)
    error = Signal(str, str)
    ended = Signal(str)  # the path of an export that was written, or failed

    def __init__(
        self,
        window: QWidget,
        overlay: OverlayState,
        models: ModelManager,
        settings: Callable[[], Settings],
        shown: Callable[[], Shown | None],
    ) -> None:
        super().__init__(window)
        self.window = window
        self.overlay = overlay
        self.models = models
        self.settings = settings
        self.shown = shown
        self.pool = JobPool(self, 1)  # exports are written one after another, as asked

    def ask(self, kind: str) -> None:
        """Ask where to write export ``kind``, then write it: the result shown when asked, even
        if another slide or result comes up while the dialog is open (it runs its own loop)."""
        source = self._source()
        if source is None:
            return
        suffix, filters = exports.KINDS[kind]
        folder = Path(self.settings().last_folder or Path.home())
        start = folder / f"{source.slide_name}{suffix}"
        path, _ = QFileDialog.getSaveFileName(self.window, "Export", str(start), filters)
        if path:
            self._write(kind, Path(path), source)

    def export(self, kind: str, path: Path) -> None:
        """Write export ``kind`` of the result shown to ``path`` in a worker; a failure is
        reported, never raised. ``ended`` says when it is done, written or not."""
        source = self._source()
        if source is None:
            self.error.emit("Nothing to export", "analyse the slide first")
            return
        self._write(kind, path, source)

    def _source(self) -> exports.ExportSource | None:
        shown = self.shown()
        if shown is None:
            return None
        opened, saved = shown
        return exports.ExportSource.of(opened, saved, self.overlay, self.models.model_now())

    def _write(self, kind: str, path: Path, source: exports.ExportSource) -> None:
        self.status.emit(f"Exporting {path.name}…", 0)
        job = CallJob(0, lambda: write_export(kind, path, source))
        job.signals.done.connect(lambda _token, problem: self._written(path, problem))
        job.signals.failed.connect(lambda _token, message: self._written(path, message))
        self.pool.start(job)

    def _written(self, path: Path, problem: str) -> None:
        if problem:
            self.error.emit("Export failed", problem)
        else:
            self.settings().last_folder = str(path.parent)
            self.status.emit(f"Exported {path}", 8000)
        self.ended.emit(str(path))

    def shutdown(self) -> None:
        """Let an export being written finish (bounded): it was asked for."""
        self.pool.wait()


def write_export(kind: str, path: Path, source: exports.ExportSource) -> str:
    """Write one export (in a worker); "" once written, else what went wrong, for the user."""
    try:
        exports.export(kind, path, source)
    except ResultsError as exc:  # the result's own files, not the export's place
        return exc.problem
    except (EquiTriageError, OSError) as exc:
        # The export's own file, not the results folder: the remedy is another place.
        reason = getattr(exc, "strerror", None) or exc
        problem = exc.problem if isinstance(exc, OutputError) else f"cannot write {path} ({reason})"
        return f"{problem}; choose another place"
    return ""
