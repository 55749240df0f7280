"""Issue 13: results say when they cannot be trusted (out of distribution, assumed µm/px), and
the rough edges a first walkthrough hit stay fixed."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialogButtonBox, QLineEdit
from pytestqt.qtbot import QtBot

from engine.identity import results_name
from engine.model import Model
from engine.model_card import clinical_card
from gui.app import headless_platform
from gui.dialogs import MppDialog, PreferencesDialog, about_html
from gui.info_panel import slide_facts
from gui.main_window import MainWindow
from gui.results_panel import CATEGORY_COLOURS
from gui.settings import Settings, load_settings
from gui.state import OUTLINED_AT_LOW_ZOOM, outlined_regions
from gui.window_parts import NOT_A_DIAGNOSIS
from tests.gui.conftest import WAIT_MS, analyse_and_wait, open_folder_and_wait, open_slide_and_wait

TCGA = "tcga-cr-7395-01a-01-ts1.svs"


def test_assumed_mpp_and_ood_are_in_the_verdict(qtbot: QtBot, window: MainWindow, slides: Path) -> None:
    window.ask_mpp = lambda _name: 0.5  # type: ignore[method-assign]
    open_slide_and_wait(qtbot, window, slides / TCGA)
    analyse_and_wait(qtbot, window)
    panel = window.results_panel
    assert window.analysis.saved is not None and window.analysis.saved.summary.out_of_distribution is True
    assert panel.caveat_label.isVisibleTo(window)
    text = panel.caveat_label.text()
    assert "Out of distribution" in text and "µm/px 0.5 is ASSUMED" in text
    assert CATEGORY_COLOURS["low suspicion"] not in panel.category_label.text()  # never green
    assert window.opened is not None
    facts = dict(slide_facts(window.opened.slide))
    assert "ASSUMED" in facts["µm/px"]


def test_cmu_is_flagged_out_of_distribution(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    analyse_and_wait(qtbot, window)
    assert window.analysis.saved is not None and window.analysis.saved.summary.out_of_distribution is True
    assert "ASSUMED" not in window.results_panel.caveat_label.text()  # the file records its µm/px


def test_mpp_dialog_has_no_guess(qtbot: QtBot) -> None:
    dialog = MppDialog("slide")
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert dialog.value() is None and not ok.isEnabled()
    dialog.choices[1][0].setChecked(True)  # 20x
    assert dialog.value() == 0.5 and ok.isEnabled()
    dialog.other.setChecked(True)
    assert dialog.value() is None and not ok.isEnabled()  # "other" needs a typed value
    dialog.other_value.setValue(0.3)
    assert dialog.value() == 0.3 and ok.isEnabled()


def test_folder_triage_default_mpp(qtbot: QtBot, window: MainWindow, slides: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copyfile(slides / TCGA, folder / "case.svs")
    view = window.batch_view
    assert view.overall.text() == ""  # no "0 of 1 slides" before a folder is chosen
    open_folder_and_wait(qtbot, window, folder)
    assert view.overall.text() == "0 of 1 slides"
    view.default_mpp.setCurrentIndex(view.default_mpp.findData(0.25))
    view.start_button.click()
    qtbot.waitUntil(lambda: not window.folder.running and view.start_button.isEnabled(), timeout=WAIT_MS * 2)
    row = window.folder.state.rows[0]
    assert row.status == "done" and row.summary is not None
    assert row.summary.slide["mpp_origin"] == "default" and row.summary.mpp_used == 0.25
    category = view.model.index(0, 4).data()
    assert "µm/px ASSUMED (0.25)" in category and "OUT OF DISTRIBUTION" in category
    with (Path(window.settings.output_dir) / "summary.csv").open() as fh:
        line = next(csv.DictReader(fh))
    assert line["mpp_origin"] == "default" and line["out_of_distribution"] == "true"
    # the test model carries the default slide policy: every caveat, as the app words it
    assert line["caveats"] == "OUT OF DISTRIBUTION; µm/px ASSUMED (0.25); THRESHOLDS NOT CALIBRATED"


def test_buttons_do_not_move_when_analysis_starts(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    """A click on Cancel must land: the buttons stay put while progress and verdict fill in."""
    panel = window.results_panel
    ys: list[int] = []

    def y() -> int:
        return panel.cancel_button.mapTo(window, panel.cancel_button.rect().topLeft()).y()

    window.resize(1400, 900)
    open_slide_and_wait(qtbot, window, cmu)
    qtbot.waitUntil(lambda: window.model is not None, timeout=WAIT_MS)
    qtbot.wait(50)
    ys.append(y())
    panel.set_progress(0, 10, "Finding tissue… " + "a long progress message " * 4)
    analyse_and_wait(qtbot, window)
    qtbot.wait(50)
    ys.append(y())
    assert ys[0] == ys[1]


def test_empty_regions_list_shows_its_header_and_rows(qtbot: QtBot, window: MainWindow) -> None:
    window.resize(1200, 600)  # a small screen: the panel scrolls instead of squeezing the list
    qtbot.wait(50)
    tree = window.results_panel.regions
    assert tree.topLevelItemCount() == 0
    row_px = tree.fontMetrics().height()
    assert tree.height() >= tree.header().height() + 3 * row_px


def test_settings_fields_show_their_text(qtbot: QtBot, tmp_path: Path) -> None:
    long_dir = str(tmp_path / "a results folder with a long name" / "and another level")
    dialog = PreferencesDialog(Settings(output_dir=long_dir))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    for edit in dialog.findChildren(QLineEdit):
        text = edit.text() or edit.placeholderText()
        assert edit.width() >= edit.fontMetrics().horizontalAdvance(text), text


def test_long_status_messages_stop_before_the_model_label(window: MainWindow) -> None:
    bar = window.statusBar()
    window.model_status.setText("Model equivariant-C8-w0.5-20261124-3837a109-int8")
    message = "Done: score 0.12, low suspicion; results in " + "/very/long/folder" * 20
    bar.showMessage(message)
    shown = bar.currentMessage()
    assert shown != message and shown.endswith("…") and bar.toolTip() == message
    room = bar.width() - window.model_status.width()
    assert bar.fontMetrics().horizontalAdvance(shown) < room


def test_recent_files_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings()
    s.add_recent(Path("slides") / "a.svs")
    assert s.recent_files == [str(tmp_path / "slides" / "a.svs")]
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    s.add_recent(Path("linked") / "b.svs")  # opened through a link: reopened the same way
    assert s.recent_files[0] == str(tmp_path / "linked" / "b.svs")
    assert results_name(Path(s.recent_files[0])) == results_name(Path("linked") / "b.svs")


def test_quitting_during_an_analysis_asks(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    asked: list[bool] = []
    answer = [False]

    def confirm() -> bool:
        asked.append(True)
        return answer[0]

    window.confirm_quit = confirm  # type: ignore[method-assign]
    open_slide_and_wait(qtbot, window, cmu)
    window.analyse()
    qtbot.waitUntil(lambda: window.analysis.running, timeout=WAIT_MS)
    window.close()
    assert asked == [True] and window.isVisible()
    answer[0] = True
    window.close()
    assert len(asked) == 2 and not window.isVisible()


def test_main_window_says_it_is_not_a_diagnosis(window: MainWindow) -> None:
    assert window.disclaimer.text() == NOT_A_DIAGNOSIS and window.disclaimer.isVisibleTo(window)


def test_about_gives_measured_numbers_not_raw_metadata() -> None:
    model = Model.load(threads=1)
    text = about_html((model, clinical_card(model)), "")
    held = model.contract.info["heldout"]  # what `training evaluate --stamp` recorded
    low, high = held["auc"]["ci95"]
    assert f"AUC {held['auc']['value']:.3f} (95% CI {low:.3f} to {high:.3f})" in text
    assert f"accuracy {held['accuracy']['value']:.3f}" in text
    assert "Intended use" in text and "Limits" in text and "provisional" in text
    assert "best_epoch" not in text and "checkpoint" not in text


def test_only_the_top_regions_are_outlined_at_low_zoom() -> None:
    n = 40
    assert outlined_regions(n, zoom=0.01, fit_zoom=0.01, selected=None) == list(range(OUTLINED_AT_LOW_ZOOM))
    assert outlined_regions(n, zoom=0.01, fit_zoom=0.01, selected=30)[-1] == 30
    assert outlined_regions(n, zoom=1.0, fit_zoom=0.01, selected=None) == list(range(n))


def test_screenshot_without_a_display_goes_offscreen() -> None:
    assert headless_platform({}, "linux") == "offscreen"
    assert headless_platform({"DISPLAY": ":0"}, "linux") is None
    assert headless_platform({"QT_QPA_PLATFORM": "xcb"}, "linux") is None
    assert headless_platform({}, "win32") is None


def test_pdf_report_lays_the_regions_out_as_a_table(qapp: object, tmp_path: Path) -> None:
    """Row 10 used to read "100.806": number and probability ran together."""
    import subprocess

    import numpy as np
    from PIL import Image

    from engine.regions import Region
    from gui.report import ReportData, write_pdf_report
    from tests.summaries import summary_of

    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    regions = [
        Region(
            ((0, i),),
            (((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)),),
            0.806,
            0.8,
            0.009,
            (10.0 * i, 5.0),
            (0, 0, 1, 1),
        )
        for i in range(12)
    ]
    summary = summary_of(
        score=0.5,
        category="intermediate",
        slide={"mpp_origin": "default", "mpp_used": 0.25, "file_mpp": None},
        out_of_distribution=True,
        ood={"reasons": ["stain and texture unlike the training slides"]},
    )
    thumb = np.full((64, 64, 3), 230, np.uint8)
    data = ReportData("case", [("File", "case.svs")], summary, regions, thumb, Image.fromarray(thumb))
    out = tmp_path / "r.pdf"
    write_pdf_report(out, data)
    text = subprocess.run(
        ["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in text.splitlines() if line.strip().startswith("10 ")]
    assert rows and rows[0][:4] == ["10", "0.806", "0.800", "0.009"]
    assert "max p" in text and "mean p" in text and "max pmean p" not in text
    assert "Out of distribution" in text and "µm/px 0.25 is ASSUMED" in text


def test_a_command_line_override_is_kept_for_the_session_unless_changed_in_settings(
    qtbot: QtBot, settings: Settings, tmp_path: Path
) -> None:
    """`python -m gui --output X`: X is used but not saved, even after an OK in Settings for
    another change; choosing another folder there saves that one."""
    stored = settings.output_dir
    window = MainWindow(
        dataclasses.replace(settings, output_dir=str(tmp_path / "session")), {"output_dir": stored}
    )
    qtbot.addWidget(window)
    try:
        window.apply_settings(dataclasses.replace(window.settings, threads=2))
        assert load_settings().output_dir == stored and load_settings().threads == 2
        assert window.settings.output_dir == str(tmp_path / "session")
        window.apply_settings(dataclasses.replace(window.settings, output_dir=str(tmp_path / "chosen")))
        assert load_settings().output_dir == str(tmp_path / "chosen")
    finally:
        window.shutdown()
