"""Preferences, About (model card and disclaimer) and the µm/px question."""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine import __version__
from engine.model import Model
from engine.model_card import ClinicalCard
from engine.triage import explain_score
from gui.report import DISCLAIMER
from gui.settings import Settings


class PreferencesDialog(QDialog):
    """Edits a copy of the settings; ``result_settings()`` after ``accept``."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("EquiTriage settings")
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
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
        # wide enough for the paths and the stride's text, whatever the style's default
        text_px = max(
            self.fontMetrics().horizontalAdvance(t)
            for t in (settings.output_dir, settings.model_path, self.model_path.placeholderText())
        )
        self.output_dir.setMinimumWidth(min(text_px + 24, 900))
        self.model_path.setMinimumWidth(min(text_px + 24, 900))
        self.stride.setMinimumWidth(self.stride.sizeHint().width())

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
        """A new ``Settings`` with the choices made here; the one the dialog was opened with is
        left as it was, so the window can see what changed."""
        s = self._settings
        return replace(
            s,
            output_dir=self.output_dir.text().strip() or s.output_dir,
            model_path=self.model_path.text().strip(),
            threads=self.threads.value(),
            stride_px=self.stride.value(),
        )


def about_html(loaded: tuple[Model, ClinicalCard] | None, model_error: str) -> str:
    """About text: what the model is for, how well it did (its card, read when it was loaded),
    its limits and thresholds, then the technical identity; and the disclaimer."""
    e = html.escape
    parts = [f"<h3>EquiTriage {e(__version__)}</h3>", "<p>Offline triage of lymph-node slides.</p>"]
    if loaded is None:
        parts.append(f"<p><b>Model:</b> {e(model_error or 'not loaded yet')}</p>")
    else:
        model, card = loaded
        c = model.contract
        t = c.triage
        rows = [
            ("Intended use", card.intended_use),
            ("Measured", card.metrics_text()),
            (
                "Thresholds",
                f"high suspicion ≥ {t.high_threshold:g}, intermediate ≥ {t.low_threshold:g} "
                f"({explain_score(t.score_method, t.top_k)}); "
                f"{card.thresholds_note}",
            ),
            ("Limits", card.limits),
            ("Model", f"{c.model_version} (sha256 {model.sha256[:12]}…), {c.input_size} px at {c.mpp} µm/px"),
        ]
        parts.append("<table cellspacing='4'>")
        parts += [f"<tr><td valign='top'><b>{e(k)}</b></td><td>{e(v)}</td></tr>" for k, v in rows]
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


def show_about(parent: QWidget, loaded: tuple[Model, ClinicalCard] | None, model_error: str) -> QMessageBox:
    box = QMessageBox(parent)
    box.setWindowTitle("About EquiTriage")
    box.setTextFormat(box.textFormat().RichText)
    box.setText(about_html(loaded, model_error))
    box.open()
    return box


SCAN_CHOICES = (("40x scan", 0.25), ("20x scan", 0.5))


class MppDialog(QDialog):
    """Asks for the µm/px of a slide that does not record it. Nothing is pre-selected: OK stays
    disabled until the user picks the scanner's magnification or types a value."""

    def __init__(self, slide_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("µm per pixel")
        self.setMinimumWidth(440)
        layout = QVBoxLayout(self)
        text = QLabel(
            f"{slide_name} does not record its pixel size. The score depends on it: choose "
            "how the slide was scanned. The result will be marked as made with an assumed µm/px."
        )
        text.setWordWrap(True)
        layout.addWidget(text)
        self.group = QButtonGroup(self)
        self.choices: list[tuple[QRadioButton, float]] = []
        for label, mpp in SCAN_CHOICES:
            button = QRadioButton(f"{label} (about {mpp:g} µm/px)")
            self.group.addButton(button)
            self.choices.append((button, mpp))
            layout.addWidget(button)
        row = QHBoxLayout()
        self.other = QRadioButton("Other:")
        self.group.addButton(self.other)
        self.other_value = QDoubleSpinBox()
        self.other_value.setRange(0.05, 50.0)
        self.other_value.setDecimals(4)
        self.other_value.setSuffix(" µm/px")
        self.other_value.setSpecialValueText("type a value")
        self.other_value.setValue(0.05)
        self.other_value.setEnabled(False)
        row.addWidget(self.other)
        row.addWidget(self.other_value, 1)
        layout.addLayout(row)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.group.buttonToggled.connect(lambda *_: self._update())
        self.other_value.valueChanged.connect(lambda *_: self._update())
        self._update()

    def value(self) -> float | None:
        for button, mpp in self.choices:
            if button.isChecked():
                return mpp
        if self.other.isChecked() and self.other_value.value() > self.other_value.minimum():
            return float(self.other_value.value())
        return None

    def _update(self) -> None:
        self.other_value.setEnabled(self.other.isChecked())
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(self.value() is not None)


def ask_mpp(parent: QWidget, slide_name: str) -> float | None:
    """Ask for the µm/px of a slide that does not record it; None if the user cancels."""
    dialog = MppDialog(slide_name, parent)
    return dialog.value() if dialog.exec() else None


def default_export_name(folder: Path, stem: str, suffix: str) -> str:
    return str(folder / f"{stem}{suffix}")
