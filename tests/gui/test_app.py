"""The entry point: screenshot mode (in process and as ``python -m gui``), startup error dialog."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.qtbot import QtBot

from gui.app import main
from gui.settings import load_settings
from tests.conftest import REPO


def test_screenshot_after_analysis(qapp: QApplication, tmp_path: Path, model_path: Path, cmu: Path) -> None:
    out = tmp_path / "shot.png"
    code = main(
        [
            "--screenshot",
            str(out),
            "--analyse",
            "--model",
            str(model_path),
            "--output",
            str(tmp_path / "results"),
            "--size",
            "1000x700",
            str(cmu),
        ]
    )
    assert code == 0
    with Image.open(out) as img:
        assert img.width == 1000 and img.height >= 700
    assert len(list((tmp_path / "results").glob("CMU-1-Small-Region_*/summary.json"))) == 1
    # the command-line model and folder were used for this run, not stored as settings
    assert load_settings().model_path == ""
    assert load_settings().output_dir != str(tmp_path / "results")


def test_startup_error_is_a_dialog(qapp: QApplication, qtbot: QtBot) -> None:
    from gui.app import show_fatal

    seen: list[str] = []

    def close_dialog() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            seen.append(box.text())
            box.done(0)
        else:
            QTimer.singleShot(50, close_dialog)

    QTimer.singleShot(50, close_dialog)
    show_fatal("EquiTriage cannot start", "the model is missing", "details")
    assert seen == ["the model is missing"]


def test_unattended_startup_error_exits_without_a_dialog(qapp: QApplication, tmp_path: Path) -> None:
    code = main(["--screenshot", str(tmp_path / "x.png"), "--size", "wide"])
    assert code == 3
    assert QApplication.activeModalWidget() is None
    assert not (tmp_path / "x.png").exists()


def test_python_m_gui(tmp_path: Path, model_path: Path, shared_data: Path) -> None:
    """Without any display the screenshot falls back to offscreen (it used to abort, exit 134)."""
    hidden = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    out = tmp_path / "shot.png"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gui",
            "--screenshot",
            str(out),
            "--output",
            str(tmp_path / "r"),
            "--model",
            str(model_path),
            str(shared_data / "slides" / "CMU-1-Small-Region.svs"),
        ],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert out.stat().st_size > 10_000
