"""The open slide's analysis: run it through the engine's one path, show it live, show its result.

:meth:`AnalysisController.start` runs :func:`engine.batch.analyse_file` in a worker
(:class:`~gui.analysis_worker.AnalysisWorker`), as the command line and the batch do; while it
runs, the heatmap fills in (``overlay``) and the results panel shows progress and the time left.
A finished analysis is read back from its result folder and shown like any saved one
(:meth:`~AnalysisController.show`), with its regions found in the background. Answers about a
slide that is no longer open (``slides`` has moved on) end the run but are not shown.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal

from engine.model import Model
from engine.pipeline import AnalysisParams, TileBatch
from engine.regions import Region, find_regions
from engine.results import SavedAnalysis, load_saved
from engine.summary import SlideSummary
from engine.tiling import TileGrid
from gui.analysis_worker import AnalysisRequest, AnalysisWorker
from gui.model_manager import ModelManager
from gui.results_panel import ResultsPanel
from gui.stale import Latest
from gui.state import OverlayState, eta_s, format_duration
from gui.workers import CallJob, JobPool, OpenedSlide


class AnalysisController(QObject):
    """Analyses the open slide, one at a time, and shows its result in ``overlay`` and ``panel``.

    ``slides`` is the window's tag of the open slide; ``jobs`` the pool for short jobs (reading a
    result back, finding regions). Reports through ``status(text, ms)`` (a status-bar line),
    ``error(title, message)`` (a dialog) and ``has_result(bool)`` (a result is shown).
    """

    status = Signal(str, int)
    error = Signal(str, str)
    has_result = Signal(bool)
    ended = Signal()  # a run finished, failed or was cancelled

    def __init__(
        self,
        overlay: OverlayState,
        panel: ResultsPanel,
        models: ModelManager,
        slides: Latest,
        jobs: JobPool,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.overlay = overlay
        self.panel = panel
        self.models = models
        self.slides = slides
        self.jobs = jobs
        self.pool = JobPool(self, 1)
        self.worker: AnalysisWorker | None = None
        self.saved: SavedAnalysis | None = None
        self.regions = Latest()
        self._started_at = 0.0
        self._wanted: int | None = None  # the slide tag of the start waiting for the model
        panel.cancel_requested.connect(self.cancel)
        panel.regions_wanted.connect(self.find_regions)
        models.loaded.connect(self._model_loaded)
        models.failed.connect(self._model_failed)

    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def regions_pending(self) -> bool:
        return self.regions.pending

    # -- running -----------------------------------------------------------------------------
    def start(self, opened: OpenedSlide, params: AnalysisParams) -> None:
        """Analyse ``opened`` into its result folder, once the model of the settings is loaded."""
        if self.running:
            self.status.emit("An analysis is already running", 5000)
            return
        token = self._wanted = self.slides.tag
        self.panel.set_running(True)
        self.panel.set_progress(0, 1, "Loading the model…")
        self.models.with_model(lambda model: self._start(token, opened, model, params))

    def _start(self, token: int, opened: OpenedSlide, model: Model, params: AnalysisParams) -> None:
        if token != self._wanted:  # another slide's start waits for the model too: the panel is its
            return
        self._wanted = None
        if not self.slides.is_latest(token) or self.running:
            self.panel.set_running(self.running)
            return
        slide = opened.slide
        mpp = slide.mpp if slide.mpp_origin == "override" else None  # typed in by the user
        worker = AnalysisWorker(AnalysisRequest(token, opened.job, opened.out_dir, model, params, mpp))
        s = worker.signals
        s.planned.connect(self._planned)
        s.progress.connect(self._progress)
        s.tiles.connect(self._tiles)
        s.finished.connect(self._finished)
        s.failed.connect(self._failed)
        s.cancelled.connect(self._cancelled)
        self.worker = worker
        self._started_at = time.monotonic()
        self.panel.clear_verdict("Analysing…")
        self.panel.set_progress(0, 1, "Finding tissue…")
        self.status.emit(f"Analysing {slide.name} with model {model.version}", 0)
        self.pool.start(worker)

    def cancel(self) -> None:
        if self._wanted is not None:  # still waiting for the model: it will not start
            self._wanted = None
            self.panel.set_running(self.running)
            self.panel.set_progress(0, 1, "Cancelled")
            self.status.emit("Analysis cancelled", 5000)
        if self.worker is not None:
            self.worker.cancel.set()
            self.panel.progress_label.setText("Cancelling…")

    def stop(self) -> None:
        """The slide being analysed is closed: its analysis stops, and what it had saved before
        stays (nothing of it is written)."""
        if self._wanted is not None:  # a start still waiting for the model will not run
            self._wanted = None
            self.panel.set_running(self.running)
        if self.worker is not None:
            self.worker.cancel.set()
            self.status.emit(f"Stopping the analysis of {self.worker.request.job.label}…", 0)

    def shutdown(self) -> None:
        """Cancel a running analysis and wait for its worker (bounded)."""
        if self.worker is not None:
            self.worker.cancel.set()
        self.pool.wait()

    def _planned(self, token: int, grid: TileGrid) -> None:
        if self.slides.is_latest(token) and self.worker is not None:
            self.regions.drop()  # the saved result's regions, still being found, are not this one's
            c = self.worker.request.model.contract
            self.overlay.start(grid, c.triage.tile_threshold, grid.cell_mm2(c.mpp))

    def _progress(self, token: int, done: int, total: int) -> None:
        if not self.slides.is_latest(token):
            return
        if done == 0:
            self._started_at = time.monotonic()
        eta = eta_s(done, total, time.monotonic() - self._started_at)
        self.panel.set_progress(done, total, f"{done} / {total} tiles · {format_duration(eta)} left")

    def _tiles(self, token: int, batch: TileBatch) -> None:
        if self.slides.is_latest(token):
            self.overlay.add_tiles(batch.t_cols, batch.t_rows, batch.probs)

    def _ended(self) -> AnalysisRequest | None:
        worker, self.worker = self.worker, None
        self.panel.set_running(False)
        self.ended.emit()
        return None if worker is None else worker.request

    def _finished(self, token: int, summary: SlideSummary) -> None:
        request = self._ended()
        if request is None or not self.slides.is_latest(token):
            name = request.job.path.name if request else "slide"
            self.status.emit(f"{name} analysed; results saved", 8000)
            return
        folder = request.results_dir
        self.status.emit(f"Done: score {summary.score}, {summary.category}; results in {folder}", 15000)
        job = CallJob(token, lambda: load_saved(folder))
        job.signals.done.connect(self._saved_loaded)
        job.signals.failed.connect(lambda _t, message: self.error.emit("Cannot show results", message))
        self.jobs.start(job)

    def _saved_loaded(self, token: int, saved: SavedAnalysis | None) -> None:
        if self.slides.is_latest(token) and not self.running:  # a new run draws its own heatmap
            self.show(saved)

    def _failed(self, token: int, message: str) -> None:
        request = self._ended()
        if self.slides.is_latest(token):  # the result on disk (if any) still stands: show it again
            self.show(self.saved)
            self.panel.set_progress(0, 1, f"Analysis failed: {message}")
        elif request is not None:  # a slide no longer open: say which
            message = f"{request.job.label}: {message}"
        self.error.emit("Analysis failed", message)

    def _cancelled(self, token: int) -> None:
        request = self._ended()
        if self.slides.is_latest(token):
            self.panel.set_progress(0, 1, "Cancelled")
            self.show(self.saved)
            self.status.emit("Analysis cancelled", 5000)
        elif request is not None:
            self.status.emit(f"Analysis of {request.job.label} stopped; its earlier result is kept", 8000)

    # -- showing a result --------------------------------------------------------------------
    def show(self, saved: SavedAnalysis | None) -> None:
        """Show a finished analysis (or none) of the open slide."""
        self.saved = saved
        self.has_result.emit(saved is not None)
        if saved is None:
            self.regions.drop()  # regions still being found for a run that left no result
            self.overlay.clear()
            self.panel.clear_verdict()
            return
        self.overlay.set_result(saved.grid, saved.prob_grid(), saved.policy.tile_threshold, saved.cell_mm2)
        self.find_regions()
        self.panel.show_verdict(saved.summary, self._model_note(saved))
        self.panel.set_progress(1, 1, f"Results in {saved.folder}")

    def clear(self) -> None:
        """The open slide is closed: forget its result; regions still being found are dropped."""
        self.regions.drop()
        self.saved = None
        self.overlay.clear()
        self.panel.clear_verdict()
        self.panel.set_progress(0, 1, "")
        self.has_result.emit(False)

    def find_regions(self) -> None:
        """Find the regions of the heatmap as shown, in the background (slow on big grids)."""
        grid = self.overlay.grid
        tag = self.regions.ask()
        if grid is None:
            self.regions.drop()
            return
        probs = self.overlay.probs.copy()
        cut, cell_mm2 = self.overlay.region_cut, self.overlay.cell_mm2
        job = CallJob(tag, lambda: find_regions(probs, grid, cut, cell_mm2))
        job.signals.done.connect(self._regions_found)
        job.signals.failed.connect(self._regions_failed)
        self.jobs.start(job)

    def _regions_found(self, tag: int, regions: list[Region]) -> None:
        if self.regions.take(tag):
            self.overlay.set_regions(regions)

    def _regions_failed(self, tag: int, message: str) -> None:
        if self.regions.take(tag):
            self.error.emit("Cannot find regions", message)

    def _model_note(self, saved: SavedAnalysis) -> str:
        model = self.models.model_now()
        if model is None:
            return ""
        if saved.model_sha256 == model.sha256:
            return "Made by the current model."
        return f"Made by another model than the current one ({model.version}); analyse again to update."

    def _model_loaded(self, _model: Model) -> None:
        if self.saved is not None:
            self.panel.show_verdict(self.saved.summary, self._model_note(self.saved))

    def _model_failed(self, _message: str, _loud: bool) -> None:
        self._wanted = None
        self.panel.set_running(self.running)
        if not self.running:
            self.panel.set_progress(0, 1, "")
