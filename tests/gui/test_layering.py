"""gui builds on engine only: no torch, e2cnn or training; engine never imports Qt."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

FORBIDDEN_IN_GUI = ("torch", "e2cnn", "escnn", "training")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


def test_gui_imports_no_training_stack() -> None:
    loaded = _modules_after("import gui.app, gui.main_window, gui.report, gui.batch_view")
    assert "engine" in loaded and "PySide6" in loaded
    assert not loaded & set(FORBIDDEN_IN_GUI)


def test_engine_results_imports_no_qt() -> None:
    loaded = _modules_after("import engine.results, engine.batch, engine.outputs")
    assert not loaded & {"PySide6", "PyQt5", "PyQt6", "torch"}
