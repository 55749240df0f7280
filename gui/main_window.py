"""The main window: the layout, the menus and the open slide; controllers do the rest.

The window opens and closes slides (in the background: each open is tagged, and an answer for a
slide no longer wanted is dropped) and lays out the viewer, the side panels and the folder
table. Analysis (:mod:`gui.analysis_controller`), folder triage (:mod:`gui.folder_controller`)
and exports (:mod:`gui.export_controller`) are controllers of their own, which report to the
status bar and to dialogs through their ``status`` and ``error`` signals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QTabWidget

from engine.batch import SlideJob, job_for
from engine.model import Model
from engine.slide import SLIDE_SUFFIXES, Slide
from gui.analysis_controller import AnalysisController
from gui.batch_state import BatchState
from gui.batch_view import BatchView
from gui.dialogs import PreferencesDialog, ask_mpp, show_about
from gui.export_controller import ExportController, Shown
from gui.folder_controller import FolderController
from gui.info_panel import SlideInfoPanel
from gui.model_manager import ModelKey, ModelManager
from gui.overview import Overview
from gui.results_panel import ResultsPanel
from gui.settings import Settings, analysis_params, load_settings, save_settings
from gui.stale import Latest
from gui.state import OverlayState
from gui.tile_loader import rgb_to_qimage
from gui.viewer import SlideViewer
from gui.window_parts import ElidingStatusBar, SidePanel
from gui.workers import CallJob, JobPool, OpenedSlide, SlideOpener

log = logging.getLogger(__name__)

# The file dialog's filter, from the engine's one list of slide files.
SLIDE_FILTER = f"Slides ({' '.join(f'*{s}' for s in sorted(SLIDE_SUFFIXES))});;All files (*)"


class MainWindow(QMainWindow):
    """The slide tab (viewer, side panel) and the folder triage tab, with their menus."""

    def __init__(self, settings: Settings | None = None, not_saved: dict[str, Any] | None = None) -> None:
        """``not_saved``: stored values of settings overridden for this session only."""
        super().__init__()
        self.settings = settings or load_settings()
        self.not_saved = dict(not_saved or {})
        self.persist = True
        self.setWindowTitle("EquiTriage")
        self.setAcceptDrops(True)
        self.resize(1400, 900)
        self.jobs = JobPool(self, 2)  # opening, model loading, reading results, regions
        self.routes = Latest()  # tags each path opened until it is known to be a folder or a slide
        self.slides = Latest()  # tags each slide opened: answers for another are dropped
        self.shown = Latest()  # tags the slide shown: its analysis reports only while it is shown
        self.opened: OpenedSlide | None = None
        self.models = ModelManager(self.jobs.pool, self._model_wanted, self)
        self.errors: list[str] = []
        self.last_dialog: QMessageBox | None = None
        self.overlay = OverlayState(
            opacity=self.settings.opacity,
            threshold=self.settings.threshold,
            visible=self.settings.heatmap_visible,
        )
        self._build_ui()
        self._build_menus()
        self.setStatusBar(ElidingStatusBar(self))
        self.model_status = QLabel("")
        self.model_status.setProperty("permanent", True)
        self.model_status.setFrameShape(QLabel.Shape.StyledPanel)
        self.statusBar().addPermanentWidget(self.model_status)
        self.statusBar().showMessage("Ready")
        for controller in (self.analysis, self.folder, self.exports):
            controller.status.connect(lambda text, ms: self.statusBar().showMessage(text, ms))
            controller.error.connect(self.report_error)
        self.models.loading.connect(lambda: self.model_status.setText("Loading model…"))
        self.models.loaded.connect(lambda model: self.model_status.setText(f"Model {model.version}"))
        self.models.failed.connect(self._model_failed)
        QTimer.singleShot(0, self._load_model_quietly)

    # -- layout ------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.tabs = QTabWidget()
        self.viewer = SlideViewer(self.overlay)
        self.viewer.tile_failed.connect(self._tile_failed)
        self.overview = Overview(self.overlay)
        self.overview.set_viewport(self.viewer.viewport)
        self.viewer.view_changed.connect(self.overview.update)
        self.overview.centre_requested.connect(lambda x, y: self.viewer.centre_on(x, y))
        self.results_panel = ResultsPanel(self.overlay)
        self.results_panel.analyse_requested.connect(self.analyse)
        self.results_panel.region_activated.connect(self.go_to_region)
        self.info_panel = SlideInfoPanel()
        side = SidePanel(self.overview, self.results_panel, self.info_panel)
        self.disclaimer, self.side_tabs = side.disclaimer, side.tabs
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.viewer)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setSizes([1040, 360])
        self.tabs.addTab(splitter, "Slide")
        self.batch_view = BatchView(BatchState())
        self.tabs.addTab(self.batch_view, "Folder triage")
        self.setCentralWidget(self.tabs)
        self.analysis = AnalysisController(
            self.overlay, self.results_panel, self.models, self.shown, self.jobs, self
        )
        self.folder = FolderController(self.batch_view, self.models, lambda: self.settings, self)
        self.folder.shown.connect(lambda: self.tabs.setCurrentWidget(self.batch_view))
        self.folder.open_requested.connect(self.open_path)
        self.exports = ExportController(self, self.overlay, self.models, lambda: self.settings, self._shown)

    def _shown(self) -> Shown | None:
        saved = self.analysis.saved
        return None if self.opened is None or saved is None else (self.opened, saved)

    def _action(self, menu: Any, text: str, slot: Callable[[], object], shortcut: Any = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        m = self.menuBar()
        file = m.addMenu("&File")
        self._action(file, "&Open slide…", self.open_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._fill_recent()
        self._action(file, "Triage a &folder…", self.folder.choose, "Ctrl+Shift+O")
        file.addSeparator()
        export = file.addMenu("&Export")
        ask = self.exports.ask
        self.export_actions = [
            self._action(export, "Overlay image (PNG)…", lambda: ask("overlay")),
            self._action(export, "Regions for QuPath (GeoJSON)…", lambda: ask("geojson")),
            self._action(export, "Tile probabilities (CSV)…", lambda: ask("csv")),
            self._action(export, "Report (PDF or HTML)…", lambda: ask("report"), "Ctrl+P"),
        ]
        self.analysis.has_result.connect(self._set_export_actions)
        self.analysis.ended.connect(lambda: QTimer.singleShot(0, self._reopen_if_due))
        self._reopen_due = False  # the results folder changed during an analysis
        self._set_export_actions(False)
        self._action(file, "&Close slide", self.close_slide, QKeySequence.StandardKey.Close)
        file.addSeparator()
        self._action(file, "Settings…", self.preferences, QKeySequence.StandardKey.Preferences)
        self._action(file, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        view = m.addMenu("&View")
        self._action(view, "Fit to window", self.viewer.fit, "F")
        self._action(view, "Zoom in", lambda: self.viewer.zoom_by(2.0), QKeySequence.StandardKey.ZoomIn)
        self._action(view, "Zoom out", lambda: self.viewer.zoom_by(0.5), QKeySequence.StandardKey.ZoomOut)
        self._action(view, "Toggle heatmap", lambda: self.overlay.set_visible(not self.overlay.visible), "H")
        analysis = m.addMenu("&Analysis")
        self._action(analysis, "&Analyse slide", self.analyse, "Ctrl+R")
        self._action(analysis, "&Cancel", self.cancel_shown, "Esc")
        help_menu = m.addMenu("&Help")
        self._action(help_menu, "&About EquiTriage", self.about)

    def cancel_shown(self) -> None:
        """Cancel what the tab shown runs: the slide's analysis, or the folder triage."""
        if self.tabs.currentWidget() is self.batch_view:
            self.folder.cancel()
        else:
            self.analysis.cancel()

    def _set_export_actions(self, has_result: bool) -> None:
        for action in self.export_actions:
            action.setEnabled(has_result)

    # -- messages ----------------------------------------------------------------------------
    def report_error(self, title: str, message: str) -> None:
        """A readable, non-blocking dialog and a status-bar line; never an exception."""
        log.warning("%s: %s", title, message)
        self.errors.append(message)
        self.statusBar().showMessage(f"{title}: {message}", 15000)
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.last_dialog = box

    def _tile_failed(self, message: str) -> None:
        self.statusBar().showMessage(
            f"Cannot read part of the slide ({message}). Was the file moved or deleted?", 15000
        )
        self.errors.append(message)

    # -- the open slide ----------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = str(Path(self.settings.recent_files[0]).parent) if self.settings.recent_files else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open slide", start, SLIDE_FILTER)
        if path:
            self.open_path(Path(path))

    def open_path(self, path: Path, out_dir: Path | None = None) -> None:
        """Open a slide in the background, with its results in ``out_dir`` (default: the
        settings' output folder); a folder opens in folder triage. Whether ``path`` is a folder,
        and its slide's job, are found in a worker: the disk may be slow or gone."""
        path = Path(path)
        out = out_dir or Path(self.settings.output_dir)
        job = CallJob(self.routes.ask(), lambda: None if path.is_dir() else job_for(path))
        job.signals.done.connect(lambda tag, slide_job: self._routed(tag, path, slide_job, out))
        job.signals.failed.connect(lambda tag, message: self._routed_failed(tag, message))
        self.jobs.start(job)

    def _routed(self, tag: int, path: Path, job: SlideJob | None, out_dir: Path) -> None:
        if not self.routes.take(tag):  # another path was opened since
            return
        if job is None:
            self.folder.open(path)
            return
        if self.analysis.running and not self.confirm_stop_analysis(f"Open {path.name}"):
            return
        tag = self.slides.ask()
        self.statusBar().showMessage(f"Opening {path.name}…")
        self.viewer.message = f"Opening {path.name}…"
        opener = SlideOpener(tag, job, out_dir)
        opener.signals.done.connect(self._slide_opened)
        opener.signals.failed.connect(self._slide_failed)
        self.jobs.start(opener)

    def _routed_failed(self, tag: int, message: str) -> None:
        if self.routes.take(tag):
            self.report_error("Cannot open", message)

    def _slide_failed(self, tag: int, message: str) -> None:
        if not self.slides.take(tag):
            return
        self.viewer.message = "The slide could not be opened."
        self.viewer.update()
        self.report_error("Cannot open slide", message)

    def _slide_opened(self, tag: int, opened: OpenedSlide) -> None:
        if not self.slides.take(tag):
            self._close_later(opened.slide)
            return
        self._close_current()
        self.shown.take(self.shown.ask())  # a failed open later leaves this slide and its analysis
        self.opened = opened
        slide = opened.slide
        self.settings.add_recent(opened.path)
        self.setWindowTitle(f"{slide.name} – EquiTriage")
        self.viewer.set_slide(slide, opened.thumbnail)
        self.overview.set_slide(rgb_to_qimage(opened.thumbnail), slide.dimensions)
        self.info_panel.show_slide(slide, opened.associated)
        self.tabs.setCurrentIndex(0)
        self.viewer.setFocus()
        self.statusBar().showMessage(f"Opened {opened.path}", 5000)
        if opened.saved_error:
            self.report_error("Saved results not shown", opened.saved_error)
        self.analysis.show(opened.saved)

    def _close_current(self) -> None:
        old = self.opened
        self.opened = None
        self.analysis.stop()  # an analysis belongs to its slide
        self.analysis.clear()
        if old is not None:
            self.viewer.set_slide(None)
            self._close_later(old.slide)

    def _close_later(self, slide: Slide) -> None:
        """Close ``slide`` in a worker: it waits for its reads in flight (the viewer's, however slow
        the disk), which the UI thread must not."""
        self.jobs.start(CallJob(0, slide.close))

    def close_slide(self) -> None:
        if self.analysis.running and not self.confirm_stop_analysis("Close it"):
            return
        self.routes.drop()  # a slide still being looked up is not opened either
        self.slides.drop()
        self.shown.drop()
        self._close_current()
        self.viewer.message = "No slide open"
        self.overview.set_slide(None, (1, 1))
        self.info_panel.clear()
        self.setWindowTitle("EquiTriage")

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for text in self.settings.recent_files:
            action = self.recent_menu.addAction(text)
            action.triggered.connect(lambda _c=False, p=text: self.open_path(Path(p)))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_path(Path(urls[0].toLocalFile()))
            event.acceptProposedAction()

    def analyse(self) -> None:
        """Analyse the open slide, asking for its µm/px first if its file records none."""
        opened = self.opened
        if opened is None or self._opening():
            self.statusBar().showMessage("Open a slide first" if opened is None else "Opening a slide…", 5000)
            return
        if self.analysis.running:
            self.statusBar().showMessage("An analysis is already running", 5000)
            return
        if opened.slide.mpp is None:
            mpp = self.ask_mpp(opened.slide.name)
            if mpp is None:
                self.statusBar().showMessage("Analysis needs the slide's µm/px", 5000)
                return
            # the dialog ran its own event loop: another slide may have opened, or begun to open
            if self.opened is not opened or self._opening() or self.analysis.running:
                self.statusBar().showMessage("Another slide was opened meanwhile: analyse it again", 8000)
                return
            opened.slide.with_mpp(mpp)
            self.info_panel.show_slide(opened.slide, opened.associated)
            self.viewer.update()
        self.analysis.start(opened, analysis_params(self.settings))

    def _opening(self) -> bool:
        """Whether a path the user opened is still being looked up, or its slide opened."""
        return self.routes.pending or self.slides.pending

    def ask_mpp(self, name: str) -> float | None:
        """Asked when a slide lacks µm/px (tests replace this)."""
        return ask_mpp(self, name)

    def go_to_region(self, index: int) -> None:
        """Centre and zoom the viewer on suspicious region ``index``."""
        if not 0 <= index < len(self.overlay.regions):
            return
        region = self.overlay.regions[index]
        self.overlay.select(index)
        self.viewer.show_box(region.l0_bbox)

    # -- model -------------------------------------------------------------------------------
    def _model_wanted(self) -> ModelKey:
        return (self.settings.model_path, self.settings.threads)

    @property
    def model(self) -> Model | None:
        """The loaded model, if it is the one the settings ask for."""
        return self.models.model_now()

    @property
    def model_error(self) -> str:
        return self.models.error

    def _model_failed(self, message: str, loud: bool) -> None:
        self.model_status.setText("No model")
        if not loud:
            self.statusBar().showMessage(f"No model: {message}", 10000)
        else:
            self.report_error("Model unavailable", message)

    def _load_model_quietly(self) -> None:
        self.models.with_model(lambda _m: None, quiet=True)

    # -- settings and about ------------------------------------------------------------------
    def preferences(self) -> None:
        dialog = PreferencesDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings())

    def apply_settings(self, settings: Settings) -> None:
        moved = settings.output_dir != self.settings.output_dir
        for key in list(self.not_saved):  # a session-only value stays so unless changed here
            if getattr(settings, key) != getattr(self.settings, key):
                del self.not_saved[key]
        self.settings = settings
        if self.model is None:
            self.models.forget()
            self._load_model_quietly()
        self.save_settings()
        if moved:  # what is open now reads and writes its results in the new folder
            self._reopen_due = True
            self._reopen_if_due()
            self.folder.results_folder_changed()

    def _reopen_if_due(self) -> None:
        """Open the slide shown again against a changed results folder, once no analysis runs
        (a slide the user is opening meanwhile reads the new folder anyway)."""
        if not self._reopen_due or self.analysis.running:
            return
        self._reopen_due = False
        if self.opened is not None and not self._opening():
            self.open_path(self.opened.path, Path(self.settings.output_dir))

    def save_settings(self) -> None:
        s = self.settings
        s.opacity = self.overlay.opacity
        s.threshold = self.overlay.threshold
        s.heatmap_visible = self.overlay.visible
        if self.persist:
            save_settings(replace(s, **self.not_saved))

    def about(self) -> None:
        model, card = self.model, self.models.card
        loaded = (model, card) if model is not None and card is not None else None
        self.last_dialog = show_about(self, loaded, self.model_error)

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel running work and wait for the workers (bounded)."""
        self.models.drop_waiters()  # nothing starts once the model loads: the window is going
        self.routes.drop()
        self.slides.drop()  # a slide that opens now is closed, not shown
        self.shown.drop()
        self.analysis.shutdown()
        self.folder.shutdown()
        self.exports.shutdown()
        self.viewer.loader.set_slide(None)
        if self.opened is not None:
            self._close_later(self.opened.slide)
            self.opened = None
        self.jobs.wait()  # the slide closes once the viewer's reads in flight end

    def confirm_stop_analysis(self, then: str) -> bool:
        """Asked before ``then`` ("Open X", "Close it") closes the slide being analysed (tests
        replace this): the analysis belongs to its slide and stops with it."""
        shown = self.opened.slide.name if self.opened is not None else "The open slide"
        return self._yes_or_no(
            "Stop the analysis?",
            f"{shown} is being analysed. {then} and stop that analysis? Its earlier result, if it "
            "has one, is kept.",
        )

    def confirm_quit(self) -> bool:
        """Asked when quitting with an analysis or folder triage running (tests replace this)."""
        what = "An analysis" if self.analysis.running else "A folder triage"
        return self._yes_or_no(
            "Quit EquiTriage?",
            f"{what} is running. Quit and stop it? A folder triage resumes where it stopped "
            "when started again; a slide's analysis starts over.",
        )

    def _yes_or_no(self, title: str, question: str) -> bool:
        """A question whose safe answer, No, is the default."""
        buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
        answer = QMessageBox.question(self, title, question, buttons, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if (self.analysis.running or self.folder.running) and not self.confirm_quit():
            event.ignore()
            return
        try:
            self.save_settings()
        except Exception:  # settings must never block quitting
            log.exception("saving settings failed")
        self.shutdown()
        event.accept()

    # -- for tests and the screenshot mode ---------------------------------------------------
    def is_idle(self) -> bool:
        """No job pending and every visible tile drawn."""
        return (
            not self.jobs.busy()
            and not self.exports.pool.busy()
            and not self.analysis.regions_pending
            and not self.analysis.running
            and not self.folder.running
            and self.viewer.tiles_complete()
        )

    def zoom_to(self, factor: float, at: QPointF | None = None) -> None:
        self.viewer.set_zoom_now(factor, at)
