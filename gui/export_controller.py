"""Exports of the result shown: the file dialog, the writing (:mod:`gui.exports`), and its errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QFileDialog, QWidget

from engine.errors import EquiTriageError, OutputError
from engine.results import ResultsError, SavedAnalysis
from gui import exports
from gui.model_manager import ModelManager
from gui.settings import Settings
from gui.state import OverlayState
from gui.workers import OpenedSlide

Shown = tuple[OpenedSlide, SavedAnalysis]  # the open slide and the result shown for it


class ExportController(QObject):
    """Writes an export (``overlay``, ``geojson``, ``csv`` or ``report``) of ``shown()``.

    The overlay and the regions of the result shown are exported as displayed (opacity,
    threshold). Reports through
    ``status(text, ms)`` and ``error(title, message)``; dialogs open over ``window``.
    """

    status = Signal(str, int)
    error = Signal(str, str)

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

    def ask(self, kind: str) -> None:
        """Ask where to write export ``kind``, then write it."""
        shown = self.shown()
        if shown is None:
            return
        suffix, filters = exports.KINDS[kind]
        folder = Path(self.settings().last_folder or Path.home())
        start = folder / f"{shown[0].slide.name}{suffix}"
        path, _ = QFileDialog.getSaveFileName(self.window, "Export", str(start), filters)
        if path:
            self.export(kind, Path(path))

    def export(self, kind: str, path: Path) -> None:
        """Write export ``kind`` to ``path``; a failure is reported, never raised."""
        shown = self.shown()
        if shown is None:
            self.error.emit("Nothing to export", "analyse the slide first")
            return
        opened, saved = shown
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            exports.export(kind, path, opened, saved, self.overlay, self.models.model_now())
        except ResultsError as exc:  # the result's own files, not the export's place
            self.error.emit("Export failed", exc.problem)
            return
        except (EquiTriageError, OSError) as exc:
            # The export's own file, not the results folder: the remedy is another place.
            reason = getattr(exc, "strerror", None) or exc
            problem = exc.problem if isinstance(exc, OutputError) else f"cannot write {path} ({reason})"
            self.error.emit("Export failed", f"{problem}; choose another place")
            return
        finally:
            QApplication.restoreOverrideCursor()
        self.settings().last_folder = str(path.parent)
        self.status.emit(f"Exported {path}", 8000)
