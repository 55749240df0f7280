"""The window's controllers on their own, with real slides and a real (tiny) ONNX model: analysis,
folder triage and exports, and the one helper that drops stale answers."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from engine.batch import BATCH_SUMMARY, analyse_file, job_for
from engine.identity import LOCK
from engine.model import Model
from engine.outputs import SUMMARY, TILES
from engine.pipeline import AnalysisParams
from engine.regions import find_regions
from engine.results import load_saved
from gui import folder_controller
from gui.analysis_controller import AnalysisController
from gui.batch_state import BatchState, own_result
from gui.batch_view import BatchView
from gui.export_controller import ExportController, Shown
from gui.folder_controller import FolderController
from gui.model_manager import ModelManager
from gui.results_panel import ResultsPanel
from gui.settings import Settings, analysis_params
from gui.stale import Latest
from gui.state import OverlayState
from gui.workers import CallJob, JobPool, OpenedSlide, SlideOpener
from tests.gui.conftest import WAIT_MS


def test_latest_keeps_only_the_answer_to_the_latest_request() -> None:
    latest = Latest()
    assert not latest.pending
    first = latest.ask()
    second = latest.ask()
    assert latest.pending and latest.is_latest(second) and not latest.is_latest(first)
    assert not latest.take(first)  # stale: dropped, the latest still waits
    assert latest.pending
    assert latest.take(second) and not latest.pending
    assert latest.is_latest(second)  # answered, still the latest (later answers of it are wanted)
    third = latest.ask()
    latest.drop()
    assert not latest.pending and not latest.take(third)


def test_every_jobs_answer_arrives_however_many_jobs_start_after_it(qtbot: QtBot) -> None:
    pool = JobPool(None, 2)
    answers: list[object] = []
    release = threading.Event()
    slow = CallJob(0, lambda: release.wait(WAIT_MS / 1000) and "slow")
    slow.signals.done.connect(lambda _token, result: answers.append(result))
    pool.start(slow)
    del slow  # the pool alone keeps it, as the window's callers leave it
    quick_jobs = 200  # e.g. a threshold slider stepped while a slide opens; no event handled meanwhile
    for i in range(quick_jobs):
        quick = CallJob(i + 1, lambda i=i: i)
        quick.signals.done.connect(lambda _token, result: answers.append(result))
        pool.start(quick)
    qtbot.waitUntil(lambda: len(answers) == quick_jobs, timeout=WAIT_MS)
    assert sorted(answers) == list(range(quick_jobs))  # type: ignore[type-var]
    release.set()
    qtbot.waitUntil(lambda: "slow" in answers, timeout=WAIT_MS)
    pool.wait()
    qtbot.waitUntil(lambda: not pool._reaper.jobs, timeout=WAIT_MS)  # each dropped once answered


@dataclass
class Reports:
    """What a controller said: status-bar lines and (title, message) errors."""

    statuses: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def listen(self, controller: AnalysisController | FolderController | ExportController) -> None:
        controller.status.connect(lambda text, _ms: self.statuses.append(text))
        controller.error.connect(lambda title, message: self.errors.append((title, message)))


@pytest.fixture
def jobs() -> Iterator[JobPool]:
    pool = JobPool(None, 2)
    yield pool
    pool.wait()


@pytest.fixture
def models(jobs: JobPool, settings: Settings) -> ModelManager:
    return ModelManager(jobs.pool, lambda: (settings.model_path, settings.threads))


# -- analysis ----------------------------------------------------------------------------------
@dataclass
class AnalysisBench:
    controller: AnalysisController
    overlay: OverlayState
    panel: ResultsPanel
    slides: Latest
    settings: Settings
    reports: Reports
    opened: list[OpenedSlide] = field(default_factory=list)

    def open(self, path: Path) -> OpenedSlide:
        """Open ``path`` as the window does (a new slide tag, answered)."""
        self.slides.take(self.slides.ask())
        opened = SlideOpener(self.slides.tag, job_for(path), Path(self.settings.output_dir)).open()
        self.opened.append(opened)
        return opened

    def start(self, opened: OpenedSlide) -> None:
        self.controller.start(opened, analysis_params(self.settings))


@pytest.fixture
def bench(qtbot: QtBot, settings: Settings, models: ModelManager, jobs: JobPool) -> Iterator[AnalysisBench]:
    overlay = OverlayState()
    panel = ResultsPanel(overlay)
    qtbot.addWidget(panel)
    slides = Latest()
    controller = AnalysisController(overlay, panel, models, slides, jobs)
    reports = Reports()
    reports.listen(controller)
    b = AnalysisBench(controller, overlay, panel, slides, settings, reports)
    yield b
    controller.shutdown()
    jobs.wait()
    for opened in b.opened:
        opened.slide.close()


def test_analysis_fills_the_heatmap_live_then_shows_the_saved_result(
    qtbot: QtBot, bench: AnalysisBench, cmu: Path
) -> None:
    events: list[str] = []
    bench.overlay.subscribe(events.append)
    results: list[bool] = []
    bench.controller.has_result.connect(results.append)
    opened = bench.open(cmu)
    bench.start(opened)
    assert bench.panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: bench.controller.running, timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: not bench.controller.running and bench.controller.saved is not None, timeout=WAIT_MS * 2
    )
    qtbot.waitUntil(lambda: not bench.controller.regions_pending, timeout=WAIT_MS)
    saved = bench.controller.saved
    assert saved is not None and saved.folder == opened.results_dir
    assert (opened.results_dir / SUMMARY).is_file() and not (opened.results_dir / LOCK).exists()
    assert events.count("probs") >= 3  # the grid planned, tiles as they came, the saved result
    assert int((bench.overlay.probs == bench.overlay.probs).sum()) == saved.summary.tiles.analysed
    assert bench.overlay.regions and results[-1] is True
    assert bench.panel.progress.value() == bench.panel.progress.maximum()
    assert bench.panel.analyse_button.isEnabled() and not bench.panel.cancel_button.isEnabled()
    assert any(s.startswith("Done: score") for s in bench.reports.statuses)
    assert bench.reports.errors == []
    bench.controller.clear()
    assert bench.controller.saved is None and bench.overlay.grid is None and results[-1] is False


def test_analysis_cancel_writes_nothing_and_releases_the_lock(
    qtbot: QtBot, bench: AnalysisBench, cmu: Path
) -> None:
    bench.settings.stride_px = 6  # thousands of tiles: long enough to cancel
    opened = bench.open(cmu)
    bench.start(opened)
    qtbot.waitUntil(lambda: bench.panel.progress.value() > 0, timeout=WAIT_MS)
    bench.panel.cancel_button.click()
    qtbot.waitUntil(lambda: not bench.controller.running, timeout=WAIT_MS)
    assert bench.panel.progress_label.text() == "Cancelled"
    assert bench.reports.statuses[-1] == "Analysis cancelled"
    assert not (opened.results_dir / SUMMARY).exists()
    assert not (opened.results_dir / LOCK).exists()
    assert bench.controller.saved is None and bench.overlay.grid is None


def test_analysis_of_a_slide_no_longer_open_is_saved_but_not_shown(
    qtbot: QtBot, bench: AnalysisBench, cmu: Path
) -> None:
    bench.settings.stride_px = 32
    opened = bench.open(cmu)
    bench.start(opened)
    qtbot.waitUntil(lambda: bench.controller.running, timeout=WAIT_MS)
    bench.slides.ask()  # the window opens another slide...
    bench.controller.clear()  # ...and closes this one
    qtbot.waitUntil(lambda: not bench.controller.running, timeout=WAIT_MS * 2)
    qtbot.wait(200)
    assert (opened.results_dir / SUMMARY).is_file()
    assert bench.reports.statuses[-1] == f"{cmu.name} analysed; results saved"
    assert bench.controller.saved is None and bench.overlay.grid is None


def test_analysis_into_an_unwritable_folder_is_refused(
    qtbot: QtBot, bench: AnalysisBench, cmu: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bench.settings.output_dir = str(blocker / "results")
    bench.start(bench.open(cmu))  # found out in the worker, not on the UI thread
    qtbot.waitUntil(lambda: bool(bench.reports.errors), timeout=WAIT_MS)
    assert not bench.controller.running
    [(title, message)] = bench.reports.errors
    assert title == "Analysis failed" and "cannot write" in message


def test_regions_of_the_saved_result_never_land_on_a_new_analysis(
    qtbot: QtBot, bench: AnalysisBench, model_path: Path, cmu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(bench.settings.output_dir)
    out.mkdir()
    analyse_file(job_for(cmu), out, Model.load(model_path, threads=1), AnalysisParams())
    release, found = threading.Event(), threading.Event()

    def slow_regions(*args: Any) -> Any:  # the saved result's regions take long on a big grid
        release.wait(WAIT_MS / 1000)
        try:
            return find_regions(*args)
        finally:
            found.set()

    monkeypatch.setattr("gui.analysis_controller.find_regions", slow_regions)
    opened = bench.open(cmu)
    assert opened.saved is not None
    bench.controller.show(opened.saved)  # its region search starts, and waits
    bench.settings.stride_px = 16  # a new analysis, long enough to watch
    bench.start(opened)
    qtbot.waitUntil(lambda: bench.panel.progress.value() > 0, timeout=WAIT_MS)  # planned, tiles coming
    release.set()
    assert found.wait(WAIT_MS / 1000)
    qtbot.wait(200)  # the old search's answer has been handled
    assert bench.controller.running and bench.overlay.regions == []
    bench.controller.cancel()
    qtbot.waitUntil(lambda: not bench.controller.running, timeout=WAIT_MS)


def test_regions_of_a_cancelled_first_run_are_not_listed(
    qtbot: QtBot, bench: AnalysisBench, cmu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, found = threading.Event(), threading.Event()

    def slow_regions(*_args: Any) -> Any:  # what the run had shown so far, found late
        release.wait(WAIT_MS / 1000)
        found.set()
        return ["a region of the cancelled run"]

    monkeypatch.setattr("gui.analysis_controller.find_regions", slow_regions)
    opened = bench.open(cmu)
    assert opened.saved is None  # a first run: nothing to fall back to
    bench.settings.stride_px = 16
    bench.start(opened)
    qtbot.waitUntil(lambda: bench.panel.progress.value() > 0, timeout=WAIT_MS)
    bench.controller.find_regions()  # the threshold moved during the run
    bench.controller.cancel()
    qtbot.waitUntil(lambda: not bench.controller.running, timeout=WAIT_MS)
    release.set()
    assert found.wait(WAIT_MS / 1000)
    qtbot.wait(200)  # the search's answer has been handled
    assert bench.controller.saved is None and bench.overlay.regions == []


def test_a_result_read_back_late_never_replaces_a_new_runs_heatmap(
    qtbot: QtBot, bench: AnalysisBench, model_path: Path, cmu: Path
) -> None:
    out = Path(bench.settings.output_dir)
    out.mkdir()
    analyse_file(job_for(cmu), out, Model.load(model_path, threads=1), AnalysisParams())
    opened = bench.open(cmu)
    assert opened.saved is not None
    bench.settings.stride_px = 16
    bench.start(opened)
    qtbot.waitUntil(lambda: bench.panel.progress.value() > 0, timeout=WAIT_MS)
    grid = bench.overlay.grid
    bench.controller._saved_loaded(bench.slides.tag, opened.saved)  # the last run's read-back, late
    assert bench.overlay.grid is grid and bench.controller.saved is None
    bench.controller.cancel()
    qtbot.waitUntil(lambda: not bench.controller.running, timeout=WAIT_MS)


# -- folder triage -----------------------------------------------------------------------------
@pytest.fixture
def folder_of_slides(tmp_path: Path, slides: Path, shared_data: Path) -> Path:
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copyfile(slides / "CMU-1-Small-Region.svs", folder / "case_a.svs")
    shutil.copyfile(shared_data / "broken" / "broken_random_ascii.svs", folder / "case_b.svs")
    return folder


def test_a_result_is_its_slides_own_only_while_the_file_is_unchanged(
    settings: Settings, model_path: Path, folder_of_slides: Path
) -> None:
    """What a folder row shows, listed or 'busy' (another process writes it): never the result of
    an earlier file at the same path."""
    out = Path(settings.output_dir)
    out.mkdir()
    job = job_for(folder_of_slides / "case_a.svs")
    analyse_file(job, out, Model.load(model_path, threads=1), AnalysisParams())
    summary, same = own_result(out, job)
    assert summary is not None and same
    with (folder_of_slides / "case_a.svs").open("ab") as fh:
        fh.write(b"\0")  # another file at the same path now
    summary, same = own_result(out, job)
    assert summary is not None and not same
    assert own_result(out, job_for(folder_of_slides / "case_b.svs")) == (None, False)


def test_a_cancel_while_the_model_loads_starts_nothing(
    qtbot: QtBot,
    bench: AnalysisBench,
    models: ModelManager,
    settings: Settings,
    folder_of_slides: Path,
    cmu: Path,
) -> None:
    view = BatchView(BatchState())  # folder triage too
    qtbot.addWidget(view)
    folder = FolderController(view, models, lambda: settings)
    with qtbot.waitSignal(folder.shown, timeout=WAIT_MS):
        folder.open(folder_of_slides)
    assert models.model is None
    # From here no event is handled until the model has been asked for and both cancelled.
    opened = bench.open(cmu)
    bench.start(opened)  # the model loads in the background first
    assert bench.panel.progress_label.text() == "Loading the model…" and bench.panel.cancel_button.isEnabled()
    bench.panel.cancel_button.click()
    assert bench.panel.analyse_button.isEnabled() and not bench.panel.cancel_button.isEnabled()
    view.start_button.click()
    assert not view.start_button.isEnabled()
    folder.cancel()
    assert view.start_button.isEnabled()
    qtbot.waitUntil(lambda: models.model is not None, timeout=WAIT_MS)  # the model arrives
    qtbot.wait(300)
    assert not bench.controller.running and not (opened.results_dir / SUMMARY).exists()
    assert not folder.running and not list(Path(settings.output_dir).glob("*/" + SUMMARY))


def test_a_folder_opened_while_the_model_loads_is_listed_not_the_old_one_triaged(
    qtbot: QtBot,
    models: ModelManager,
    settings: Settings,
    folder_of_slides: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'Analyse all' waits for the model; a folder opened meanwhile used to be dropped when its
    listing came back, while the old folder was triaged."""
    view = BatchView(BatchState())
    qtbot.addWidget(view)
    folder = FolderController(view, models, lambda: settings)
    with qtbot.waitSignal(folder.shown, timeout=WAIT_MS):
        folder.open(folder_of_slides)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(folder_of_slides / "case_a.svs", other / "case_c.svs")
    release = threading.Event()
    listed = folder_controller.list_folder

    def slow_listing(*args: Any) -> Any:
        release.wait(WAIT_MS / 1000)
        return listed(*args)

    monkeypatch.setattr(folder_controller, "list_folder", slow_listing)
    assert models.model is None
    view.start_button.click()  # waits for the model
    folder.open(other)  # listed in the background, slowly
    qtbot.waitUntil(lambda: models.model is not None, timeout=WAIT_MS)
    qtbot.wait(300)
    assert not folder.running  # the folder shown before is not triaged
    with qtbot.waitSignal(folder.shown, timeout=WAIT_MS):
        release.set()
    assert folder.state.folder == other and [r.job.label for r in folder.state.rows] == ["case_c"]
    assert not list(Path(settings.output_dir).glob("*/" + SUMMARY))


def test_a_results_folder_changed_during_a_triage_is_listed_when_it_ends(
    qtbot: QtBot, models: ModelManager, settings: Settings, folder_of_slides: Path, tmp_path: Path
) -> None:
    view = BatchView(BatchState())
    qtbot.addWidget(view)
    folder = FolderController(view, models, lambda: settings)
    with qtbot.waitSignal(folder.shown, timeout=WAIT_MS):
        folder.open(folder_of_slides)
    old = folder.state.out_dir
    view.start_button.click()
    qtbot.waitUntil(lambda: folder.running, timeout=WAIT_MS)
    settings.output_dir = str(tmp_path / "new-results")
    Path(settings.output_dir).mkdir()
    folder.results_folder_changed()  # as Settings does; the triage keeps writing where it began
    assert folder.state.out_dir == old
    qtbot.waitUntil(lambda: not folder.running, timeout=WAIT_MS * 2)
    qtbot.waitUntil(lambda: folder.state.out_dir == Path(settings.output_dir), timeout=WAIT_MS)
    assert old is not None and list(old.glob("*/" + SUMMARY))  # what it analysed stays there


def test_folder_triage_runs_resumes_and_opens_a_slide(
    qtbot: QtBot, settings: Settings, models: ModelManager, folder_of_slides: Path
) -> None:
    view = BatchView(BatchState())
    qtbot.addWidget(view)
    controller = FolderController(view, models, lambda: settings)
    reports = Reports()
    reports.listen(controller)
    with qtbot.waitSignal(controller.shown, timeout=WAIT_MS):
        controller.open(folder_of_slides)
    out = Path(settings.output_dir)
    assert [r.job.label for r in controller.state.rows] == ["case_a", "case_b"]
    assert settings.last_folder == str(folder_of_slides)
    try:
        view.start_button.click()
        qtbot.waitUntil(lambda: controller.running, timeout=WAIT_MS)
        controller.open(folder_of_slides)  # not while it runs
        assert reports.errors == [("Triage running", "cancel the running folder triage first")]
        qtbot.waitUntil(lambda: not controller.running, timeout=WAIT_MS * 2)
        rows = {r.job.label: r for r in controller.state.rows}
        assert rows["case_a"].status == "done" and rows["case_a"].score is not None
        assert rows["case_b"].status == "failed" and "not a slide" in rows["case_b"].error
        assert reports.statuses[-1] == "Folder triage finished: 2 of 2 slides, 1 could not be analysed"
        assert (out / BATCH_SUMMARY).is_file()
        view.start_button.click()  # resumable: the finished slide is not analysed again
        qtbot.waitUntil(lambda: controller.running, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: not controller.running, timeout=WAIT_MS * 2)
        assert rows["case_a"].error == "already analysed with this model"
    finally:
        controller.shutdown()
    index = next(i for i in range(2) if view.row_at(i).job.label == "case_a")
    with qtbot.waitSignal(controller.open_requested, timeout=WAIT_MS) as opened:
        view.table.doubleClicked.emit(view.proxy.index(index, 0))
    path, out_dir = opened.args
    assert path == folder_of_slides / "case_a.svs" and out_dir == out
    assert (out_dir / job_for(path).name / SUMMARY).is_file()


# -- exports -----------------------------------------------------------------------------------
def test_exports_write_what_is_shown_and_report_failures(
    qtbot: QtBot,
    settings: Settings,
    models: ModelManager,
    model_path: Path,
    cmu: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = Path(settings.output_dir)
    out.mkdir()
    job = job_for(cmu)
    analyse_file(job, out, Model.load(model_path, threads=1), AnalysisParams())
    saved = load_saved(out / job.name)
    assert saved is not None
    overlay = OverlayState()
    overlay.set_result(saved.grid, saved.prob_grid(), saved.policy.tile_threshold, saved.cell_mm2)
    overlay.set_regions(overlay.compute_regions())
    window = QWidget()
    qtbot.addWidget(window)
    shown: list[Shown] = []
    current = lambda: shown[0] if shown else None  # noqa: E731
    controller = ExportController(window, overlay, models, lambda: settings, current)
    reports = Reports()
    reports.listen(controller)
    controller.export("csv", tmp_path / "nothing.csv")
    assert reports.errors == [("Nothing to export", "analyse the slide first")]

    opened = SlideOpener(1, job, out).open()
    try:
        shown.append((opened, saved))
        exported = tmp_path / "exports"
        exported.mkdir()
        ended: list[str] = []
        controller.ended.connect(ended.append)
        controller.export("csv", exported / "first.csv")
        assert ended == []  # written in a worker: its end comes through the event loop
        qtbot.waitUntil(lambda: ended == [str(exported / "first.csv")], timeout=WAIT_MS)
        names = {"csv": "t.csv", "geojson": "r.geojson", "overlay": "o.png", "report": "r.html"}
        for kind, name in names.items():
            with qtbot.waitSignal(controller.ended, timeout=WAIT_MS):
                controller.export(kind, exported / name)
        assert len(reports.errors) == 1
        assert (exported / "t.csv").read_bytes() == (saved.folder / TILES).read_bytes()
        features = json.loads((exported / "r.geojson").read_text())["features"]
        assert len(features) == len(overlay.regions) > 0
        with Image.open(exported / "o.png") as image:
            assert image.width >= 512
        assert "CMU-1-Small-Region" in (exported / "r.html").read_text()
        assert settings.last_folder == str(exported)
        assert reports.statuses[-1] == f"Exported {exported / 'r.html'}"
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        with qtbot.waitSignal(controller.ended, timeout=WAIT_MS):
            controller.export("report", blocker / "r.pdf")
        title, message = reports.errors[-1]
        assert title == "Export failed" and "cannot write" in message and message.endswith("another place")

        class DialogWhileTheWindowMovesOn:  # the save dialog runs its own event loop
            @staticmethod
            def getSaveFileName(*_args: object) -> tuple[str, str]:  # noqa: N802 - Qt's name
                shown.clear()  # e.g. another slide finished opening meanwhile
                return str(exported / "asked.csv"), ""

        monkeypatch.setattr("gui.export_controller.QFileDialog", DialogWhileTheWindowMovesOn)
        with qtbot.waitSignal(controller.ended, timeout=WAIT_MS):
            controller.ask("csv")  # writes the result shown when it was asked for
        assert (exported / "asked.csv").read_bytes() == (saved.folder / TILES).read_bytes()
    finally:
        opened.slide.close()
