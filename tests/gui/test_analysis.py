"""Analyse with a tiny real ONNX model: live heatmap, verdict, regions, cancel, reopen, exports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pytestqt.qtbot import QtBot

from engine.batch import job_for
from engine.outputs import SUMMARY, read_summary
from gui.main_window import MainWindow
from tests.gui.conftest import WAIT_MS, analyse_and_wait, export_and_wait, open_slide_and_wait, wait_regions


def test_analyse_shows_heatmap_verdict_and_regions(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    batches: list[int] = []
    window.overlay.subscribe(lambda what: batches.append(what == "probs"))
    analyse_and_wait(qtbot, window)
    assert window.opened is not None
    folder = window.opened.results_dir
    assert folder.parent == Path(window.settings.output_dir)
    assert folder.name.startswith("CMU-1-Small-Region_")
    summary = read_summary(folder)
    assert summary is not None
    for name in ("tiles.csv", "heatmap.png", "overlay.png", "tissue.png", "regions.geojson"):
        assert (folder / name).is_file()
    # the heatmap filled while tiles completed, then showed the saved result
    assert sum(batches) >= 3
    assert window.overlay.grid is not None
    assert np.isfinite(window.overlay.probs).sum() == summary.tiles.analysed
    panel = window.results_panel
    assert summary.score is not None
    assert panel.score_label.text() == f"Score {summary.score:.3f}"
    assert summary.category.upper() in panel.category_label.text()
    assert "test-colour-1" in panel.model_label.text()
    assert panel.progress.value() == panel.progress.maximum()
    assert window.overlay.regions and panel.regions.topLevelItemCount() == len(window.overlay.regions)


def test_region_click_centres_and_zooms(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    panel = window.results_panel
    fit = window.viewer.viewport.zoom
    index = panel.regions.topLevelItemCount() - 1  # a small region
    item = panel.regions.topLevelItem(index)
    panel.regions.itemClicked.emit(item, 0)
    region = window.overlay.regions[index]
    vp = window.viewer.viewport
    assert (vp.l0_cx, vp.l0_cy) == (
        (region.l0_bbox[0] + region.l0_bbox[2]) / 2,
        (region.l0_bbox[1] + region.l0_bbox[3]) / 2,
    )
    assert vp.zoom > fit
    assert window.overlay.selected == index


def test_heatmap_controls(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    panel = window.results_panel
    n_regions = len(window.overlay.regions)
    panel.opacity_slider.setValue(80)
    assert window.overlay.opacity == 0.8
    panel.threshold_slider.setValue(90)
    assert window.overlay.threshold == 0.9
    wait_regions(qtbot, window)
    assert np.isfinite(window.overlay.shown_probs()).sum() < np.isfinite(window.overlay.probs).sum()
    assert len(window.overlay.regions) <= n_regions
    shown = window.viewer.grab().toImage()
    panel.show_heatmap.setChecked(False)
    assert not window.overlay.visible
    hidden = window.viewer.grab().toImage()
    assert not shown.isNull() and not hidden.isNull()
    assert shown != hidden  # the heatmap was drawn, and hiding it removed it


def test_reopen_shows_saved_results_without_running(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    assert window.analysis.saved is not None
    stored = read_summary(window.analysis.saved.folder)
    assert stored is not None
    created = stored.created
    window.close_slide()
    assert window.analysis.saved is None and window.overlay.grid is None
    open_slide_and_wait(qtbot, window, cmu)
    assert not window.analysis.running
    assert window.analysis.saved is not None
    wait_regions(qtbot, window)
    assert window.overlay.regions
    assert window.analysis.saved.summary.created == created
    assert window.overlay.grid is not None
    assert "Made by the current model" in window.results_panel.model_label.text()


def test_cancel_stops_and_writes_nothing(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    window.settings.stride_px = 6  # thousands of tiles: long enough to cancel
    open_slide_and_wait(qtbot, window, cmu)
    window.analyse()
    qtbot.waitUntil(lambda: window.results_panel.progress.value() > 0, timeout=WAIT_MS)
    assert window.results_panel.cancel_button.isEnabled()
    window.results_panel.cancel_button.click()
    qtbot.waitUntil(lambda: not window.analysis.running, timeout=WAIT_MS)
    assert window.results_panel.progress_label.text() == "Cancelled"
    assert window.results_panel.analyse_button.isEnabled()
    assert window.opened is not None and window.opened.path == cmu
    assert not (window.opened.results_dir / SUMMARY).exists()
    assert not list(Path(window.settings.output_dir).glob("*/.lock"))  # the lock was released


def test_slide_without_mpp_asks_for_it(qtbot: QtBot, window: MainWindow, slides: Path) -> None:
    asked: list[str] = []

    def ask(name: str) -> float:
        asked.append(name)
        return 0.5

    window.ask_mpp = ask  # type: ignore[method-assign]
    open_slide_and_wait(qtbot, window, slides / "tcga-cr-7395-01a-01-ts1.svs")
    analyse_and_wait(qtbot, window)
    assert asked == ["tcga-cr-7395-01a-01-ts1"]
    assert window.analysis.saved is not None
    assert window.analysis.saved.summary.mpp_used == 0.5
    assert window.analysis.saved.summary.slide["mpp_origin"] == "override"  # typed in for this slide
    assert window.viewer.slide is not None and window.viewer.slide.mpp == 0.5


def test_a_slide_opened_under_the_mpp_question_is_not_given_the_first_ones_analysis(
    qtbot: QtBot, window: MainWindow, slides: Path, cmu: Path
) -> None:
    """The µm/px dialog runs its own event loop: a slide the user opened meanwhile (a drop, a
    recent file) used to be shown with the first slide's analysis drawn over it."""
    tcga = slides / "tcga-cr-7395-01a-01-ts1.svs"

    def open_another_then_answer(_name: str) -> float:
        window.open_path(cmu)
        qtbot.waitUntil(lambda: window.opened is not None and window.opened.path == cmu, timeout=WAIT_MS)
        return 0.5

    window.ask_mpp = open_another_then_answer  # type: ignore[method-assign]
    open_slide_and_wait(qtbot, window, tcga)
    window.analyse()
    assert not window.analysis.running and window.analysis.saved is None
    assert "Another slide was opened" in window.statusBar().currentMessage()
    assert window.opened is not None and window.opened.path == cmu


def test_a_results_folder_changed_during_an_analysis_takes_effect_when_it_ends(
    qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path
) -> None:
    """It used to be forgotten: the next analysis of the slide wrote to the old folder."""
    old = Path(window.settings.output_dir)
    open_slide_and_wait(qtbot, window, cmu)
    qtbot.waitUntil(lambda: window.model is not None, timeout=WAIT_MS)
    window.analyse()
    assert window.analysis.running
    new = tmp_path / "new-results"
    new.mkdir()
    window.apply_settings(dataclasses.replace(window.settings, output_dir=str(new)))
    assert window.opened is not None and window.opened.out_dir == old  # the run writes where it began
    qtbot.waitUntil(lambda: not window.analysis.running, timeout=WAIT_MS * 2)
    qtbot.waitUntil(lambda: window.opened is not None and window.opened.out_dir == new, timeout=WAIT_MS)
    assert (old / window.opened.job.name / SUMMARY).is_file()  # the finished run's result stays there


def test_exports(qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    out = tmp_path / "exports"
    out.mkdir()
    for kind, name in (("overlay", "o.png"), ("geojson", "r.geojson"), ("csv", "t.csv")):
        export_and_wait(qtbot, window, kind, out / name)
    export_and_wait(qtbot, window, "report", out / "r.html")
    export_and_wait(qtbot, window, "report", out / "r.pdf")
    assert window.errors == []
    with Image.open(out / "o.png") as img:
        assert img.width >= 512
    features = json.loads((out / "r.geojson").read_text())["features"]
    assert len(features) == len(window.overlay.regions)
    assert (out / "t.csv").read_text().startswith("x0,y0,w0,h0,tissue_fraction,prob")
    html = (out / "r.html").read_text()
    for needed in ("CMU-1-Small-Region", "test-colour-1", "not a diagnosis", "data:image/png"):
        assert needed in html
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    export_and_wait(qtbot, window, "report", blocker / "r.pdf")
    assert window.errors and "cannot write" in window.errors[-1]
    pdf = (out / "r.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 1


def test_results_of_a_slide_no_longer_open_are_dropped(
    qtbot: QtBot, window: MainWindow, cmu: Path, slides: Path
) -> None:
    window.settings.stride_px = 8  # long enough to switch slides while it runs
    open_slide_and_wait(qtbot, window, cmu)
    window.analyse()
    qtbot.waitUntil(lambda: window.results_panel.progress.value() > 0, timeout=WAIT_MS)
    other = slides / "tcga-cr-7395-01a-01-ts1.svs"
    window.confirm_stop_analysis = lambda _then: True  # type: ignore[method-assign]
    open_slide_and_wait(qtbot, window, other)  # the old slide's analysis stops
    assert window.overlay.grid is None  # the new slide shows no heatmap of the old one
    qtbot.wait(300)
    assert window.overlay.grid is None and window.analysis.saved is None
    qtbot.waitUntil(lambda: not window.analysis.running, timeout=WAIT_MS)
    assert window.opened is not None and window.opened.path == other
    assert window.overlay.grid is None


def test_a_changed_file_does_not_show_the_old_result(
    qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path
) -> None:
    import os
    import shutil

    copy = tmp_path / "slide.svs"
    shutil.copyfile(cmu, copy)
    open_slide_and_wait(qtbot, window, copy)
    analyse_and_wait(qtbot, window)
    window.close_slide()
    os.utime(copy, ns=(1, 1))  # another version of the file at the same path
    open_slide_and_wait(qtbot, window, copy)
    assert window.analysis.saved is None and window.overlay.grid is None
    assert any("another version of this file" in e for e in window.errors)


def test_exports_during_a_new_analysis_are_of_the_result_shown(
    qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path
) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    saved = window.analysis.saved
    assert saved is not None
    regions = len(window.overlay.regions)
    assert regions > 0
    window.settings.stride_px = 8  # a long second run
    window.analyse()
    qtbot.waitUntil(lambda: window.results_panel.progress.value() > 0, timeout=WAIT_MS)
    assert window.overlay.regions == []  # the live heatmap of the new run has none yet
    export_and_wait(qtbot, window, "geojson", tmp_path / "r.geojson")
    export_and_wait(qtbot, window, "report", tmp_path / "r.html")
    window.analysis.cancel()
    qtbot.waitUntil(lambda: not window.analysis.running, timeout=WAIT_MS)
    assert window.errors == []
    assert len(json.loads((tmp_path / "r.geojson").read_text())["features"]) == regions
    assert f"Suspicious regions ({regions})" in (tmp_path / "r.html").read_text()


def test_a_failed_analysis_keeps_the_result_shown(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    from engine.identity import ResultLock

    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    assert window.opened is not None
    shown = window.analysis.saved
    with ResultLock(window.opened.results_dir):  # the folder triage of this app is writing it
        window.analyse()
        qtbot.waitUntil(lambda: bool(window.errors), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: not window.analysis.running, timeout=WAIT_MS)
    assert "being analysed by this program" in window.errors[-1]
    assert window.analysis.saved is shown and window.overlay.grid is not None  # still on disk, shown
    assert shown is not None and shown.summary.score is not None
    assert window.results_panel.score_label.text() == f"Score {shown.summary.score:.3f}"


def test_a_failed_open_leaves_the_slide_shown_and_its_analysis(
    qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path
) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    window.settings.stride_px = 16
    window.analyse()
    qtbot.waitUntil(lambda: window.results_panel.progress.value() > 0, timeout=WAIT_MS)
    not_a_slide = tmp_path / "notes.txt"
    not_a_slide.write_text("not a slide")
    window.confirm_stop_analysis = lambda _then: True  # type: ignore[method-assign]
    window.open_path(not_a_slide)  # it would stop the analysis only once it opened
    qtbot.waitUntil(lambda: bool(window.errors), timeout=WAIT_MS)
    done = lambda: not window.analysis.running and window.analysis.saved is not None  # noqa: E731
    qtbot.waitUntil(done, timeout=WAIT_MS * 4)
    assert window.opened is not None and window.opened.path == cmu
    assert window.overlay.grid is not None  # the finished result of the slide still open is shown


def test_opening_another_slide_asks_and_then_stops_the_analysis(
    qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path
) -> None:
    import shutil

    other = tmp_path / "other.svs"
    shutil.copyfile(cmu, other)
    asked: list[str] = []
    answer = [False]

    def confirm(then: str) -> bool:
        asked.append(then)
        return answer[0]

    window.confirm_stop_analysis = confirm  # type: ignore[method-assign]
    open_slide_and_wait(qtbot, window, cmu)
    window.settings.stride_px = 16
    window.analyse()
    qtbot.waitUntil(lambda: window.results_panel.progress.value() > 0, timeout=WAIT_MS)
    window.open_path(other)  # asked once the path is known to be a slide; "No": nothing changes
    qtbot.waitUntil(lambda: asked == ["Open other.svs"], timeout=WAIT_MS)
    window.close_slide()
    assert asked == ["Open other.svs", "Close it"]
    assert window.analysis.running and window.opened is not None and window.opened.path == cmu
    answer[0] = True
    open_slide_and_wait(qtbot, window, other)
    qtbot.waitUntil(lambda: not window.analysis.running, timeout=WAIT_MS)
    assert window.results_panel.analyse_button.isEnabled()
    assert not window.results_panel.cancel_button.isEnabled()
    assert window.analysis.saved is None  # the other slide has no result, and none of the first's
    assert not (Path(window.settings.output_dir) / job_for(cmu).name / "summary.json").exists()
    assert "Analysis of CMU-1-Small-Region stopped" in window.statusBar().currentMessage()
    analyse_and_wait(qtbot, window)  # the other slide can be analysed at once
    assert window.analysis.saved is not None and window.analysis.saved.folder.name == job_for(other).name


def test_another_results_folder_in_the_settings_applies_to_the_open_slide(
    qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path
) -> None:
    from gui.dialogs import PreferencesDialog

    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    elsewhere = tmp_path / "elsewhere"
    dialog = PreferencesDialog(window.settings, window)
    qtbot.addWidget(dialog)
    dialog.output_dir.setText(str(elsewhere))
    window.apply_settings(dialog.result_settings())  # what OK in Preferences does
    qtbot.waitUntil(lambda: window.opened is not None and window.opened.out_dir == elsewhere, timeout=WAIT_MS)
    assert window.analysis.saved is None  # nothing of it there yet
    analyse_and_wait(qtbot, window)
    assert window.opened is not None and window.opened.results_dir.parent == elsewhere


def test_escape_cancels_what_the_tab_shown_runs(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    window.settings.stride_px = 16  # a long analysis
    window.analyse()
    qtbot.waitUntil(lambda: window.analysis.running, timeout=WAIT_MS)
    window.tabs.setCurrentWidget(window.batch_view)
    window.cancel_shown()  # Esc on the folder tab: the slide's analysis goes on
    assert window.analysis.running and window.analysis.worker is not None
    assert not window.analysis.worker.cancel.is_set()
    window.tabs.setCurrentIndex(0)
    window.cancel_shown()
    qtbot.waitUntil(lambda: not window.analysis.running, timeout=WAIT_MS)
