"""The main window: viewer and side panels, folder triage, menus, and the jobs that feed them.

Everything slow (opening a slide, loading the model, analysing, exporting) runs in a thread
pool; answers carry the token of the slide they were started for and are dropped if another
slide is open by then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, Qt, QThreadPool, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStatusBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.batch import SlideJob, discover_slides
from engine.errors import EquiTriageError, OutputError
from engine.identity import results_name
from engine.model import Model
from engine.outputs import check_writable
from engine.pipeline import AnalysisParams, TileBatch
from engine.regions import Region, find_regions
from engine.results import SavedAnalysis, load_saved
from engine.summary import SlideSummary
from engine.tiling import TileGrid
from gui import exports
from gui.analysis_worker import AnalysisRequest, AnalysisWorker, BatchWorker
from gui.batch_state import BatchState
from gui.batch_view import BatchView
from gui.dialogs import PreferencesDialog, ask_mpp, show_about
from gui.info_panel import SlideInfoPanel
from gui.model_manager import ModelKey, ModelManager
from gui.overview import Overview
from gui.remedies import app_message
from gui.results_panel import ResultsPanel
from gui.settings import Settings, load_settings, read_threads, save_settings
from gui.state import OverlayState, eta_s, format_duration
from gui.tile_loader import rgb_to_qimage
from gui.viewer import SlideViewer
from gui.workers import CallJob, OpenedSlide, SlideOpener

log = logging.getLogger(__name__)

SLIDE_FILTER = (
    "Slides (*.svs *.tif *.tiff *.ndpi *.vms *.vmu *.scn *.mrxs *.svslide *.bif *.dcm "
    "*.png *.jpg *.jpeg);;All files (*)"
)


NOT_A_DIAGNOSIS = "Triage aid, not a diagnosis: every slide must still be read by a pathologist."


class ElidingStatusBar(QStatusBar):
    """Long messages are cut with "…" before the permanent widgets (full text in the tooltip),
    so they never run into the model label."""

    def showMessage(self, text: str, timeout: int | None = 0) -> None:  # noqa: N802 (Qt API)
        permanent = sum(
            w.sizeHint().width() + 12 for w in self.findChildren(QLabel) if w.property("permanent")
        )
        room = max(40, self.width() - permanent - 24)
        shown = self.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, room)
        self.setToolTip(text if shown != text else "")
        super().showMessage(shown, timeout or 0)


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None, not_saved: dict[str, Any] | None = None) -> None:
        """``not_saved``: stored values of settings overridden for this session only."""
        super().__init__()
        self.settings = settings or load_settings()
        self.not_saved = dict(not_saved or {})
        self.persist = True
        self.setWindowTitle("EquiTriage")
        self.setAcceptDrops(True)
        self.resize(1400, 900)
        self.jobs = QThreadPool(self)  # opening, model loading, exports
        self.jobs.setMaxThreadCount(2)
        self.analysis_pool = QThreadPool(self)
        self.analysis_pool.setMaxThreadCount(1)
        self.batch_pool = QThreadPool(self)
        self.batch_pool.setMaxThreadCount(1)
        self._live: list[Any] = []  # runnables whose signals are still wanted

        self._token = 0
        self.opened: OpenedSlide | None = None
        self.saved: SavedAnalysis | None = None
        self.models = ModelManager(self.jobs, self)
        self.analysis: AnalysisWorker | None = None
        self._analysis_started = 0.0
        self.batch: BatchWorker | None = None
        self._regions_asked = 0
        self._regions_shown = 0
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
        self.models.loading.connect(lambda: self.model_status.setText("Loading model…"))
        self.models.loaded.connect(self._model_loaded)
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
        self.results_panel.cancel_requested.connect(self.cancel_analysis)
        self.results_panel.region_activated.connect(self.go_to_region)
        self.results_panel.regions_wanted.connect(self.find_regions)
        self.info_panel = SlideInfoPanel()
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        self.disclaimer = QLabel(NOT_A_DIAGNOSIS)
        self.disclaimer.setWordWrap(True)
        self.disclaimer.setStyleSheet("QLabel { color: #444; background: #eef; padding: 3px; }")
        side_layout.addWidget(self.disclaimer)
        # The overview keeps its height and the panel scrolls rather than squeezing: a verdict
        # appearing never moves the Analyse and Cancel buttons.
        self.overview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        side_layout.addWidget(self.overview)
        self.side_tabs = QTabWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.results_panel)
        self.side_tabs.addTab(scroll, "Analysis")
        self.side_tabs.addTab(self.info_panel, "Slide")
        side_layout.addWidget(self.side_tabs, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.viewer)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setSizes([1040, 360])
        self.tabs.addTab(splitter, "Slide")
        self.batch_state = BatchState()
        self.batch_view = BatchView(self.batch_state)
        self.batch_view.choose_folder_requested.connect(self.choose_folder)
        self.batch_view.start_requested.connect(self.start_batch)
        self.batch_view.cancel_requested.connect(self.cancel_batch)
        self.batch_view.open_requested.connect(self._open_from_batch)
        self.tabs.addTab(self.batch_view, "Folder triage")
        self.setCentralWidget(self.tabs)
        self._set_slide_actions(False)

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
        self._action(file, "Triage a &folder…", self.choose_folder, "Ctrl+Shift+O")
        file.addSeparator()
        export = file.addMenu("&Export")
        self.export_actions = [
            self._action(export, "Overlay image (PNG)…", lambda: self._export_dialog("overlay")),
            self._action(export, "Regions for QuPath (GeoJSON)…", lambda: self._export_dialog("geojson")),
            self._action(export, "Tile probabilities (CSV)…", lambda: self._export_dialog("csv")),
            self._action(export, "Report (PDF or HTML)…", lambda: self._export_dialog("report"), "Ctrl+P"),
        ]
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
        self.analyse_action = self._action(analysis, "&Analyse slide", self.analyse, "Ctrl+R")
        self._action(analysis, "&Cancel", self.cancel_analysis, "Esc")
        help_menu = m.addMenu("&Help")
        self._action(help_menu, "&About EquiTriage", self.about)

    def _set_slide_actions(self, has_results: bool) -> None:
        for action in getattr(self, "export_actions", []):
            action.setEnabled(has_results)

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

    def _start(self, pool: QThreadPool, job: Any) -> None:
        self._live.append(job)
        if len(self._live) > 64:
            self._live = self._live[-64:]
        pool.start(job)

    # -- opening slides ----------------------------------------------------------------------
    def results_dir_for(self, path: Path) -> Path:
        return Path(self.settings.output_dir) / results_name(path)

    def open_dialog(self) -> None:
        start = str(Path(self.settings.recent_files[0]).parent) if self.settings.recent_files else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open slide", start, SLIDE_FILTER)
        if path:
            self.open_path(Path(path))

    def open_path(self, path: Path, results_dir: Path | None = None) -> None:
        """Open a slide in the background; a folder opens in folder triage."""
        path = Path(path)
        if path.is_dir():
            self.open_folder(path)
            return
        self._token += 1
        self.statusBar().showMessage(f"Opening {path.name}…")
        self.viewer.message = f"Opening {path.name}…"
        job = SlideOpener(self._token, path, results_dir or self.results_dir_for(path))
        job.signals.done.connect(self._slide_opened)
        job.signals.failed.connect(self._slide_failed)
        self._start(self.jobs, job)

    def _slide_failed(self, token: int, message: str) -> None:
        if token != self._token:
            return
        self.viewer.message = "The slide could not be opened."
        self.viewer.update()
        self.report_error("Cannot open slide", message)

    def _slide_opened(self, token: int, opened: OpenedSlide) -> None:
        if token != self._token:
            opened.slide.close()
            return
        self._close_current()
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
        self.show_saved(opened.saved)

    def _close_current(self) -> None:
        self._regions_asked += 1
        self._regions_shown = self._regions_asked
        old = self.opened
        self.opened = None
        self.saved = None
        self.overlay.clear()
        self.results_panel.clear_verdict()
        self.results_panel.set_progress(0, 1, "")
        self._set_slide_actions(False)
        if old is not None:
            self.viewer.set_slide(None)
            self.viewer.loader.wait()
            old.slide.close()

    def close_slide(self) -> None:
        self._token += 1
        self._close_current()
        self.viewer.message = "No slide open"
        self.overview.set_slide(None, (1, 1))
        self.info_panel.clear()
        self.setWindowTitle("EquiTriage")

    def show_saved(self, saved: SavedAnalysis | None) -> None:
        """Show a finished analysis (or none) for the open slide."""
        self.saved = saved
        self._set_slide_actions(saved is not None)
        if saved is None:
            self.overlay.clear()
            self.results_panel.clear_verdict()
            return
        self.overlay.set_result(saved.grid, saved.prob_grid(), saved.policy.tile_threshold, saved.cell_mm2)
        self.find_regions()
        self.results_panel.show_verdict(saved.summary, self._model_note(saved))
        self.results_panel.set_progress(1, 1, f"Results in {saved.folder}")

    def _model_note(self, saved: SavedAnalysis) -> str:
        if self.model is None:
            return ""
        if saved.model_sha256 == self.model.sha256:
            return "Made by the current model."
        return f"Made by another model than the current one ({self.model.version}); analyse again to update."

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for text in self.settings.recent_files:
            action = self.recent_menu.addAction(text)
            action.triggered.connect(lambda _c=False, p=text: self.open_path(Path(p)))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    # -- drag and drop -----------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_path(Path(urls[0].toLocalFile()))
            event.acceptProposedAction()

    # -- model -------------------------------------------------------------------------------
    def _model_wanted(self) -> ModelKey:
        return (self.settings.model_path, self.settings.threads)

    @property
    def model(self) -> Model | None:
        """The loaded model, if it is the one the settings ask for."""
        return self.models.current(self._model_wanted())

    @property
    def model_error(self) -> str:
        return self.models.error

    def with_model(self, then: Callable[[Model], None], quiet: bool = False) -> None:
        """Call ``then(model)`` once the model of the current settings is loaded."""
        self.models.request(self._model_wanted(), then, quiet)

    def _model_loaded(self, model: Model) -> None:
        self.model_status.setText(f"Model {model.version}")
        if self.saved is not None:
            self.results_panel.show_verdict(self.saved.summary, self._model_note(self.saved))

    def _model_failed(self, message: str, loud: bool) -> None:
        self.model_status.setText("No model")
        self.results_panel.set_running(self.analysis is not None)
        if self.analysis is None:
            self.results_panel.set_progress(0, 1, "")
        self.batch_view.set_running(self.batch is not None)
        if not loud:
            self.statusBar().showMessage(f"No model: {message}", 10000)
        else:
            self.report_error("Model unavailable", message)

    def _load_model_quietly(self) -> None:
        self.with_model(lambda _m: None, quiet=True)

    def params(self) -> AnalysisParams:
        return AnalysisParams(stride_px=self.settings.stride_px or None, read_threads=read_threads())

    # -- analysis ----------------------------------------------------------------------------
    @property
    def analysis_running(self) -> bool:
        return self.analysis is not None

    def ask_mpp(self, name: str) -> float | None:
        """Asked when a slide lacks µm/px (tests replace this)."""
        return ask_mpp(self, name)

    def _check_output_dir(self) -> bool:
        try:
            check_writable(Path(self.settings.output_dir))
        except OutputError as exc:
            self.report_error("Results folder not writable", app_message(exc))
            return False
        return True

    def analyse(self) -> None:
        opened = self.opened
        if opened is None:
            self.statusBar().showMessage("Open a slide first", 5000)
            return
        if self.analysis is not None:
            self.statusBar().showMessage("An analysis is already running", 5000)
            return
        if opened.slide.mpp is None:
            mpp = self.ask_mpp(opened.slide.name)
            if mpp is None:
                self.statusBar().showMessage("Analysis needs the slide's µm/px", 5000)
                return
            opened.slide.with_mpp(mpp)
            self.info_panel.show_slide(opened.slide, opened.associated)
            self.viewer.update()
        if not self._check_output_dir():
            return
        token = self._token
        self.results_panel.set_running(True)
        self.results_panel.set_progress(0, 1, "Loading the model…")
        self.with_model(lambda model: self._start_analysis(token, model))

    def _start_analysis(self, token: int, model: Model) -> None:
        opened = self.opened
        if token != self._token or opened is None or self.analysis is not None:
            self.results_panel.set_running(self.analysis is not None)
            return
        mpp = opened.slide.mpp if opened.slide.mpp_origin == "override" else None
        request = AnalysisRequest(token, opened.path, opened.results_dir, model, self.params(), mpp)
        worker = AnalysisWorker(request)
        s = worker.signals
        s.planned.connect(self._analysis_planned)
        s.progress.connect(self._analysis_progress)
        s.tiles.connect(self._analysis_tiles)
        s.finished.connect(self._analysis_finished)
        s.failed.connect(self._analysis_failed)
        s.cancelled.connect(self._analysis_cancelled)
        self.analysis = worker
        self._analysis_started = time.monotonic()
        self.results_panel.clear_verdict("Analysing…")
        self.results_panel.set_progress(0, 1, "Finding tissue…")
        self.statusBar().showMessage(f"Analysing {opened.slide.name} with model {model.version}")
        self._start(self.analysis_pool, worker)

    def cancel_analysis(self) -> None:
        if self.analysis is not None:
            self.analysis.cancel.set()
            self.results_panel.progress_label.setText("Cancelling…")

    def _analysis_planned(self, token: int, grid: TileGrid) -> None:
        if token == self._token and self.model is not None:
            c = self.model.contract
            cell_mm2 = grid.cell_mm2(c.mpp)
            self.overlay.start(grid, c.triage.tile_threshold, cell_mm2)

    def _analysis_progress(self, token: int, done: int, total: int) -> None:
        if token != self._token:
            return
        if done == 0:
            self._analysis_started = time.monotonic()
        eta = eta_s(done, total, time.monotonic() - self._analysis_started)
        self.results_panel.set_progress(done, total, f"{done} / {total} tiles · {format_duration(eta)} left")

    def _analysis_tiles(self, token: int, batch: TileBatch) -> None:
        if token == self._token:
            self.overlay.add_tiles(batch.t_cols, batch.t_rows, batch.probs)

    def _analysis_done(self) -> None:
        self.analysis = None
        self.results_panel.set_running(False)

    def _analysis_finished(self, token: int, summary: SlideSummary) -> None:
        worker = self.analysis
        self._analysis_done()
        if token != self._token or worker is None:
            name = worker.request.path.name if worker else "slide"
            self.statusBar().showMessage(f"{name} analysed; results saved", 8000)
            return
        folder = worker.request.results_dir
        self.statusBar().showMessage(
            f"Done: score {summary.score}, {summary.category}; results in {folder}",
            15000,
        )
        job = CallJob(token, lambda: load_saved(folder))
        job.signals.done.connect(self._saved_loaded)
        job.signals.failed.connect(lambda _t, msg: self.report_error("Cannot show results", msg))
        self._start(self.jobs, job)

    def _saved_loaded(self, token: int, saved: SavedAnalysis | None) -> None:
        if token == self._token:
            self.show_saved(saved)

    def _analysis_failed(self, token: int, message: str) -> None:
        self._analysis_done()
        if token == self._token:
            self.results_panel.clear_verdict("Analysis failed")
            self.results_panel.set_progress(0, 1, message)
            self.overlay.clear()
        self.report_error("Analysis failed", message)

    def _analysis_cancelled(self, token: int) -> None:
        self._analysis_done()
        if token == self._token:
            self.results_panel.set_progress(0, 1, "Cancelled")
            self.show_saved(self.saved)
        self.statusBar().showMessage("Analysis cancelled", 5000)

    @property
    def regions_pending(self) -> bool:
        return self._regions_shown != self._regions_asked

    def find_regions(self) -> None:
        """Find the regions of the current heatmap in the background (slow on big grids)."""
        grid = self.overlay.grid
        self._regions_asked += 1
        if grid is None:
            self._regions_shown = self._regions_asked
            return
        probs = self.overlay.probs.copy()
        cut, cell_mm2 = self.overlay.region_cut, self.overlay.cell_mm2
        job = CallJob(self._regions_asked, lambda: find_regions(probs, grid, cut, cell_mm2))
        job.signals.done.connect(self._regions_found)
        job.signals.failed.connect(lambda _g, msg: self.report_error("Cannot find regions", msg))
        self._start(self.jobs, job)

    def _regions_found(self, generation: int, regions: list[Region]) -> None:
        if generation == self._regions_asked:
            self._regions_shown = generation
            self.overlay.set_regions(regions)

    def go_to_region(self, index: int) -> None:
        """Centre and zoom the viewer on suspicious region ``index``."""
        if not 0 <= index < len(self.overlay.regions):
            return
        region = self.overlay.regions[index]
        self.overlay.select(index)
        self.viewer.show_box(region.l0_bbox)

    # -- folder triage -----------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of slides", self.settings.last_folder)
        if folder:
            self.open_folder(Path(folder))

    def open_folder(self, folder: Path) -> None:
        if self.batch is not None:
            self.report_error("Triage running", "cancel the running folder triage first")
            return
        out = Path(self.settings.output_dir)
        try:
            jobs = discover_slides(folder, exclude=out)
        except EquiTriageError as exc:
            self.report_error("Cannot triage folder", app_message(exc))
            return
        self.settings.last_folder = str(folder)
        self.batch_state.load(folder, out, jobs)
        self.batch_view.set_running(False)
        self.tabs.setCurrentWidget(self.batch_view)
        if not jobs:
            self.statusBar().showMessage(f"No slides in {folder}", 8000)

    def start_batch(self) -> None:
        if self.batch is not None or not self.batch_state.rows or not self._check_output_dir():
            return
        self.batch_view.set_running(True)
        self.with_model(self._start_batch)

    def _start_batch(self, model: Model) -> None:
        if self.batch is not None or self.batch_state.folder is None:
            return
        self.batch_state.mark_queued()
        jobs = [row.job for row in self.batch_state.rows]
        out = self.batch_state.out_dir or Path(self.settings.output_dir)
        worker = BatchWorker(
            self._token, jobs, out, model, self.params(), self.batch_view.default_mpp_value()
        )
        s = worker.signals
        s.started.connect(lambda _t, job: self.batch_state.started(job))
        s.progress.connect(self._batch_progress)
        s.outcome.connect(lambda _t, outcome: self.batch_state.finished(outcome))
        s.finished.connect(self._batch_finished)
        s.failed.connect(self._batch_failed)
        self.batch = worker
        self.statusBar().showMessage(f"Triaging {len(jobs)} slides…")
        self._start(self.batch_pool, worker)

    def _batch_progress(self, _token: int, job: SlideJob | None, done: int, total: int) -> None:
        if job is not None:
            self.batch_state.progress(job, done, total)

    def cancel_batch(self) -> None:
        if self.batch is not None:
            self.batch.cancel.set()

    def _batch_finished(self, _token: int, cancelled: bool) -> None:
        self.batch = None
        self.batch_view.set_running(False)
        if cancelled:
            self.batch_state.cancelled()
        done, total = self.batch_state.counts()
        failed = sum(r.status == "failed" for r in self.batch_state.rows)
        self.statusBar().showMessage(
            f"Folder triage {'cancelled' if cancelled else 'finished'}: {done} of {total} slides"
            + (f", {failed} could not be analysed" if failed else ""),
            15000,
        )
        self.batch_view.table.sortByColumn(3, Qt.SortOrder.DescendingOrder)

    def _batch_failed(self, _token: int, message: str) -> None:
        self.batch = None
        self.batch_view.set_running(False)
        self.batch_state.cancelled()
        self.report_error("Folder triage stopped", message)

    def _open_from_batch(self, path: Path, results_dir: Path) -> None:
        self.open_path(path, results_dir)

    # -- exports -----------------------------------------------------------------------------
    def _export_dialog(self, kind: str) -> None:
        if self.saved is None or self.opened is None:
            return
        suffix, filters = exports.KINDS[kind]
        start = Path(self.settings.last_folder or Path.home()) / f"{self.opened.slide.name}{suffix}"
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(start), filters)
        if path:
            self.export(kind, Path(path))

    def export(self, kind: str, path: Path) -> None:
        """Write one export (``overlay``, ``geojson``, ``csv`` or ``report``) to ``path``."""
        if self.saved is None or self.opened is None:
            self.report_error("Nothing to export", "analyse the slide first")
            return
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            exports.export(kind, path, self.opened, self.saved, self.overlay, self.model)
        except (EquiTriageError, OSError) as exc:
            # The export's own file, not the results folder: the remedy is another place.
            reason = getattr(exc, "strerror", None) or exc
            problem = exc.problem if isinstance(exc, OutputError) else f"cannot write {path} ({reason})"
            self.report_error("Export failed", f"{problem}; choose another place")
            return
        finally:
            QApplication.restoreOverrideCursor()
        self.settings.last_folder = str(path.parent)
        self.statusBar().showMessage(f"Exported {path}", 8000)

    # -- settings and about ------------------------------------------------------------------
    def preferences(self) -> None:
        dialog = PreferencesDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings())

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        self.not_saved.clear()  # what the user chose now is to be kept
        if self.model is None:
            self.models.forget()
            self._load_model_quietly()
        self.save_settings()

    def save_settings(self) -> None:
        s = self.settings
        s.opacity = self.overlay.opacity
        s.threshold = self.overlay.threshold
        s.heatmap_visible = self.overlay.visible
        if self.persist:
            save_settings(replace(s, **self.not_saved))

    def about(self) -> None:
        self.last_dialog = show_about(self, self.model, self.model_error)

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel running work and wait for the workers (bounded)."""
        for worker in (self.analysis, self.batch):
            if worker is not None:
                worker.cancel.set()
        for pool in (self.analysis_pool, self.batch_pool, self.jobs):
            pool.waitForDone(30000)
        self.viewer.loader.set_slide(None)
        self.viewer.loader.wait()
        if self.opened is not None:
            self.opened.slide.close()
            self.opened = None

    def confirm_quit(self) -> bool:
        """Asked when quitting with an analysis or folder triage running (tests replace this)."""
        what = "An analysis" if self.analysis is not None else "A folder triage"
        answer = QMessageBox.question(
            self,
            "Quit EquiTriage?",
            f"{what} is running. Quit and stop it? A folder triage resumes where it stopped "
            "when started again; a slide's analysis starts over.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        running = self.analysis is not None or self.batch is not None
        if running and not self.confirm_quit():
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
            self.jobs.activeThreadCount() == 0
            and not self.regions_pending
            and self.analysis is None
            and self.batch is None
            and self.viewer.tiles_complete()
        )

    def zoom_to(self, factor: float, at: QPointF | None = None) -> None:
        self.viewer.set_zoom_now(factor, at)
