"""Preferences, About (model card and disclaimer) and the µm/px question."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QWidget,
)

from engine import __version__
from engine.model import Model
from engine.triage import explain_score
from gui.report import DISCLAIMER
from gui.settings import Settings


class PreferencesDialog(QDialog):
    """Edits a copy of the settings; ``result_settings()`` after ``accept``."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("EquiTriage settings")
        form = QFormLayout(self)
        self.output_dir = QLineEdit(settings.output_dir)
        form.addRow("Results folder", self._with_browse(self.output_dir, folder=True))
        self.model_path = QLineEdit(settings.model_path)
        self.model_path.setPlaceholderText("the model shipped with EquiTriage")
        form.addRow("Model (.onnx)", self._with_browse(self.model_path, folder=False))
        self.threads = QSpinBox()
        self.threads.setRange(1, 64)
        self.threads.setValue(settings.threads)
        self.threads.setToolTip("Inference threads; leave one core free to keep the window smooth")
        form.addRow("Threads", self.threads)
        self.stride = QSpinBox()
        self.stride.setRange(0, 1024)
        self.stride.setSpecialValueText("model patch size (no overlap)")
        self.stride.setValue(settings.stride_px)
        self.stride.setToolTip("Tile stride in model pixels; smaller is finer and slower")
        form.addRow("Stride (px)", self.stride)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self._settings = settings

    def _with_browse(self, edit: QLineEdit, folder: bool) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit, 1)
        button = QPushButton("Browse…")
        row.addWidget(button)

        def browse() -> None:
            if folder:
                chosen = QFileDialog.getExistingDirectory(self, "Results folder", edit.text())
            else:
                chosen, _ = QFileDialog.getOpenFileName(
                    self, "EquiTriage model", edit.text(), "ONNX models (*.onnx)"
                )
            if chosen:
                edit.setText(chosen)

        button.clicked.connect(browse)
        return box

    def result_settings(self) -> Settings:
        s = self._settings
        s.output_dir = self.output_dir.text().strip() or s.output_dir
        s.model_path = self.model_path.text().strip()
        s.threads = self.threads.value()
        s.stride_px = self.stride.value()
        return s


def about_html(model: Model | None, model_error: str) -> str:
    """About text: version, model card (from the model's contract) and the disclaimer."""
    e = html.escape
    parts = [f"<h3>EquiTriage {e(__version__)}</h3>", "<p>Offline triage of lymph-node slides.</p>"]
    if model is None:
        parts.append(f"<p><b>Model:</b> {e(model_error or 'not loaded yet')}</p>")
    else:
        c = model.contract
        t = c.triage
        rows = [
            ("Version", c.model_version),
            ("File", str(model.path)),
            ("SHA-256", model.sha256[:16] + "…"),
            ("Input", f"{c.input_size} px at {c.mpp} µm/px"),
            ("Classes", ", ".join(c.classes)),
            (
                "Triage",
                f"{explain_score(t.score_method, t.top_k)}; "
                f"high ≥ {t.high_threshold}, intermediate ≥ {t.low_threshold}; "
                f"tile threshold {t.tile_threshold}",
            ),
        ]
        rows += [(str(k), card_value(v)) for k, v in c.info.items()]
        parts.append("<h4>Model card</h4><table>")
        parts += [f"<tr><td><b>{e(k)}</b></td><td>{e(v)}</td></tr>" for k, v in rows]
        parts.append("</table>")
    parts.append(f"<p><i>{e(DISCLAIMER)}</i></p>")
    return "".join(parts)


def card_value(value: object, limit: int = 240) -> str:
    """A model-card value on one line: numbers rounded, nested mappings as ``k: v; ...``."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict):
        text = "; ".join(f"{k}: {card_value(v, limit)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(card_value(v, limit) for v in value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_about(parent: QWidget, model: Model | None, model_error: str) -> QMessageBox:
    box = QMessageBox(parent)
    box.setWindowTitle("About EquiTriage")
    box.setTextFormat(box.textFormat().RichText)
    box.setText(about_html(model, model_error))
    box.open()
    return box


def ask_mpp(parent: QWidget, slide_name: str) -> float | None:
    """Ask for the µm/px of a slide that does not record it; None if the user cancels."""
    value, ok = QInputDialog.getDouble(
        parent,
        "µm per pixel",
        f"{slide_name} does not record its pixel size.\n"
        "Enter µm per pixel (0.25 for a 40x scan, 0.5 for 20x):",
        0.25,
        0.05,
        50.0,
        4,
    )
    return value if ok else None


def default_export_name(folder: Path, stem: str, suffix: str) -> str:
    return str(folder / f"{stem}{suffix}")
