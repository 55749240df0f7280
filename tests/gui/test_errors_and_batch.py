"""Failures become readable messages; folder triage fills, sorts, survives broken slides, resumes."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from gui.main_window import MainWindow
from gui.settings import Settings, load_settings
from tests.gui.conftest import WAIT_MS, open_folder_and_wait, open_slide_and_wait


def _wait_error(qtbot: QtBot, window: MainWindow, n: int = 1) -> str:
    qtbot.waitUntil(lambda: len(window.errors) >= n, timeout=WAIT_MS)
    box = window.last_dialog
    assert isinstance(box, QMessageBox) and box.isVisible()
    return window.errors[-1]


@pytest.mark.parametrize(
    "name",
    ["broken_random_ascii.svs", "unopenable_bad_compression.tiff", "unreadable_bogus_jpeg.svs"],
)
def test_broken_slide_gives_a_dialog(qtbot: QtBot, window: MainWindow, shared_data: Path, name: str) -> None:
    window.open_path(shared_data / "broken" / name)
    qtbot.waitUntil(lambda: window.errors != [] or window.opened is not None, timeout=WAIT_MS)
    if window.opened is not None:  # opens, fails on its pixels: the analysis reports it
        window.analyse()
    message = _wait_error(qtbot, window)
    assert name in message or "cannot" in message or "not a slide" in message
    assert not window.analysis.running


def test_missing_model(qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path) -> None:
    window.settings.model_path = str(tmp_path / "nowhere.onnx")
    open_slide_and_wait(qtbot, window, cmu)
    window.analyse()
    message = _wait_error(qtbot, window)
    assert message.endswith("nowhere.onnx: no model file there; check the model file in File ▸ Settings")
    assert "--" not in message
    assert window.results_panel.analyse_button.isEnabled()


def test_unwritable_output_folder(qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    window.settings.output_dir = str(blocker / "results")
    open_slide_and_wait(qtbot, window, cmu)
    window.analyse()
    message = _wait_error(qtbot, window)
    assert "cannot write" in message and "File ▸ Settings" in message
    assert not window.analysis.running


def test_slide_deleted_while_open(qtbot: QtBot, window: MainWindow, cmu: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.svs"
    shutil.copyfile(cmu, copy)
    open_slide_and_wait(qtbot, window, copy)
    copy.unlink()
    window.viewer.set_zoom_now(8.0)  # tiles may still come from the open handle; no crash
    window.analyse()
    message = _wait_error(qtbot, window)
    assert "no such file" in message
    assert window.results_panel.analyse_button.isEnabled()


def _folder(tmp_path: Path, slides: Path, shared_data: Path) -> Path:
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copyfile(slides / "CMU-1-Small-Region.svs", folder / "case_a.svs")
    shutil.copyfile(slides / "boxes_generic_tiled.tiff", folder / "case_b.tiff")
    shutil.copyfile(shared_data / "broken" / "broken_random_ascii.svs", folder / "case_c.svs")
    shutil.copyfile(slides / "small_16x16.svs", folder / "case_d.svs")
    return folder


def test_batch_fills_sorts_and_resumes(
    qtbot: QtBot, window: MainWindow, slides: Path, shared_data: Path, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, slides, shared_data)
    open_folder_and_wait(qtbot, window, folder)  # a folder goes to folder triage
    view = window.batch_view
    assert window.tabs.currentWidget() is view
    assert view.proxy.rowCount() == 4
    view.start_button.click()
    qtbot.waitUntil(lambda: not window.folder.running and view.start_button.isEnabled(), timeout=WAIT_MS * 2)
    rows = {r.job.label: r for r in window.folder.state.rows}
    assert rows["case_a"].status == "done" and rows["case_a"].score is not None
    for broken in ("case_b", "case_c", "case_d"):
        assert rows[broken].status == "failed" and rows[broken].error
    assert rows["case_b"].error == (
        "case_b: the slide does not record its µm/px; "
        "open it on its own (double-click) to enter its µm/px and analyse it"
    )
    assert not [r.error for r in rows.values() if "--" in r.error]  # no command-line flags in the app
    assert view.overall.value() == 4
    # sorted by score, most suspicious first; failed slides last
    assert view.row_at(0).job.label == "case_a"
    view.table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    assert [view.row_at(i).job.label for i in range(4)] == ["case_d", "case_c", "case_b", "case_a"]
    assert (Path(window.settings.output_dir) / "summary.csv").is_file()
    # resumable: a second run skips the finished slide
    view.start_button.click()
    qtbot.waitUntil(lambda: not window.folder.running and view.start_button.isEnabled(), timeout=WAIT_MS * 2)
    assert rows["case_a"].error == "already analysed with this model"
    # double-click opens the slide with its heatmap
    view.table.sortByColumn(3, Qt.SortOrder.DescendingOrder)
    view.table.doubleClicked.emit(view.proxy.index(0, 0))
    qtbot.waitUntil(lambda: window.analysis.saved is not None, timeout=WAIT_MS)
    assert window.tabs.currentIndex() == 0
    assert window.opened is not None and window.opened.path == folder / "case_a.svs"
    assert window.overlay.grid is not None


def test_reopening_a_folder_shows_saved_scores(
    qtbot: QtBot, window: MainWindow, slides: Path, shared_data: Path, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, slides, shared_data)
    open_folder_and_wait(qtbot, window, folder)
    view = window.batch_view
    view.start_button.click()
    qtbot.waitUntil(lambda: not window.folder.running and view.start_button.isEnabled(), timeout=WAIT_MS * 2)
    open_folder_and_wait(qtbot, window, folder)
    statuses = {r.job.label: r.status for r in window.folder.state.rows}
    assert statuses["case_a"] == "saved" and statuses["case_c"] == "queued"
    # a slide replaced at the same path since its analysis is not shown with the old score
    (folder / "case_a.svs").unlink()
    shutil.copyfile(slides / "CMU-1-Small-Region.svs", folder / "case_a.svs")
    os.utime(folder / "case_a.svs", ns=(1, 1))
    open_folder_and_wait(qtbot, window, folder)
    row = next(r for r in window.folder.state.rows if r.job.label == "case_a")
    assert row.status == "queued" and row.summary is None and "changed since its analysis" in row.error


def test_settings_persist(qtbot: QtBot, settings: Settings, cmu: Path) -> None:
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.results_panel.opacity_slider.setValue(70)
    window.results_panel.threshold_slider.setValue(30)
    window.settings.threads = 3
    window.settings.stride_px = 48
    window.settings.add_recent(cmu)
    window.close()
    stored = load_settings()
    assert stored.opacity == pytest.approx(0.7)
    assert stored.threshold == pytest.approx(0.3)
    assert (stored.threads, stored.stride_px) == (3, 48)
    assert stored.output_dir == settings.output_dir
    assert stored.recent_files == [str(cmu.resolve())]  # stored absolute, links resolved
    again = MainWindow(stored)
    qtbot.addWidget(again)
    assert again.results_panel.opacity_slider.value() == 70
    assert again.overlay.opacity == pytest.approx(0.7)


def test_about_shows_model_card_and_disclaimer(qtbot: QtBot, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: window.model is not None, timeout=WAIT_MS)
    window.about()
    box = window.last_dialog
    assert isinstance(box, QMessageBox) and box.isVisible()
    assert "test-colour-1" in box.text() and "not a diagnosis" in box.text()
    assert "high suspicion ≥ 0.8" in box.text() and "provisional" in box.text()
    box.done(0)


def test_about_shows_the_card_read_when_the_model_loaded(
    qtbot: QtBot, settings: Settings, model_path: Path, tmp_path: Path
) -> None:
    """The card beside a model without stamped numbers is read by the loader, not by the About
    box on the UI thread: the numbers stay after the file is gone."""
    model = tmp_path / "carded" / model_path.name
    model.parent.mkdir()
    shutil.copyfile(model_path, model)
    card = model.with_name("MODEL_CARD.md")
    card.write_text(
        "# Card of `test-colour-1`\n\n| metric | value | 95% CI |\n|---|---|---|\n"
        "| ROC AUC | 0.912 | 0.900 to 0.924 |\n",
        encoding="utf-8",
    )
    window = MainWindow(dataclasses.replace(settings, model_path=str(model)))
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.model is not None, timeout=WAIT_MS)
    card.unlink()
    window.about()
    box = window.last_dialog
    assert isinstance(box, QMessageBox)
    assert "AUC 0.912 (95% CI 0.900 to 0.924)" in box.text()
    box.done(0)
    window.shutdown()


def test_remedies_are_worded_for_the_app() -> None:
    from engine.errors import NEUTRAL_REMEDIES, MissingMppError, ModelNotFoundError, Remedy
    from gui.remedies import APP_REMEDIES, app_message

    assert app_message(MissingMppError("x: the slide does not record its µm/px")) == (
        "x: the slide does not record its µm/px; open it on its own (double-click) to enter its µm/px "
        "and analyse it"
    )
    no_model = ModelNotFoundError("no model is shipped with this installation", Remedy.CHOOSE_MODEL)
    assert app_message(no_model) == (
        "no model is shipped with this installation; choose an EquiTriage ONNX model in File ▸ Settings"
    )
    assert app_message(ValueError("boom")).startswith("unexpected error (ValueError: boom)")
    for remedy in Remedy:
        assert "--" not in APP_REMEDIES.get(remedy, NEUTRAL_REMEDIES[remedy])


def test_preferences_dialog_edits_settings(qtbot: QtBot, settings: Settings) -> None:
    from gui.dialogs import PreferencesDialog

    dialog = PreferencesDialog(settings)
    qtbot.addWidget(dialog)
    dialog.output_dir.setText("/tmp/elsewhere")
    dialog.threads.setValue(2)
    dialog.stride.setValue(64)
    dialog.model_path.setText("")
    before = dataclasses.replace(settings)
    result = dialog.result_settings()
    assert (result.output_dir, result.threads, result.stride_px) == ("/tmp/elsewhere", 2, 64)
    assert result.model_path == ""
    assert settings == before  # a new object: the window compares the two to see what changed


def test_a_results_folder_holding_the_slides_is_refused(
    qtbot: QtBot, window: MainWindow, tmp_path: Path
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    window.settings.output_dir = str(tmp_path)  # the slides' own parent
    window.folder.open(slides)  # found out in the listing's worker
    qtbot.waitUntil(lambda: bool(window.errors), timeout=WAIT_MS)
    assert "choose a results folder outside it" in window.errors[-1]
