"""GUI test fixtures: offscreen Qt, settings in a tmp dir, a tiny real ONNX model, a main window."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6.QtWidgets")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings

from gui.main_window import MainWindow
from gui.settings import Settings
from tests.onnx_models import write_model

WAIT_MS = 30000


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path) -> Path:
    """QSettings of every test live in its own tmp dir, never in the user's."""
    folder = tmp_path / "qsettings"
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    return folder


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "colour.onnx")


@pytest.fixture
def slides(shared_data: Path) -> Path:
    return shared_data / "slides"


@pytest.fixture
def cmu(slides: Path) -> Path:
    return slides / "CMU-1-Small-Region.svs"


@pytest.fixture
def settings(tmp_path: Path, model_path: Path) -> Settings:
    return Settings(output_dir=str(tmp_path / "results"), model_path=str(model_path), threads=1)


@pytest.fixture
def window(qtbot: object, settings: Settings) -> Iterator[MainWindow]:
    w = MainWindow(settings)

    def unexpected(then: str) -> bool:  # a real question box would wait for ever offscreen
        raise AssertionError(f"asked to stop the analysis ({then}); a test that expects it answers")

    w.confirm_stop_analysis = unexpected  # type: ignore[method-assign]
    qtbot.addWidget(w)  # type: ignore[attr-defined]
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)  # type: ignore[attr-defined]
    yield w
    w.shutdown()


def open_slide_and_wait(qtbot: object, window: MainWindow, path: Path) -> None:
    window.open_path(path)
    qtbot.waitUntil(  # type: ignore[attr-defined]
        lambda: window.opened is not None and window.opened.path == path, timeout=WAIT_MS
    )


def open_folder_and_wait(qtbot: object, window: MainWindow, folder: Path) -> None:
    """Open ``folder`` in folder triage; its listing is read in the background."""
    with qtbot.waitSignal(window.folder.shown, timeout=WAIT_MS):  # type: ignore[attr-defined]
        window.open_path(folder)


def analyse_and_wait(qtbot: object, window: MainWindow) -> None:
    window.analyse()
    qtbot.waitUntil(  # type: ignore[attr-defined]
        lambda: not window.analysis.running and window.analysis.saved is not None, timeout=WAIT_MS * 2
    )
    wait_regions(qtbot, window)


def wait_regions(qtbot: object, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: not window.analysis.regions_pending, timeout=WAIT_MS)  # type: ignore[attr-defined]


def export_and_wait(qtbot: object, window: MainWindow, kind: str, path: Path) -> None:
    """Ask for an export of the result shown and wait until it is written (or has failed)."""
    with qtbot.waitSignal(window.exports.ended, timeout=WAIT_MS):  # type: ignore[attr-defined]
        window.exports.export(kind, path)
