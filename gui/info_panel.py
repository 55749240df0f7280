"""The slide's facts (format, size, levels, µm/px, objective) and its label and macro images."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from engine.slide import Slide
from engine.summary import SlideSummary
from gui.tile_loader import rgb_to_qimage


def slide_facts(slide: Slide, result: SlideSummary | None = None) -> list[tuple[str, str]]:
    """(label, value) rows describing a slide, for people. With ``result``, the µm/px rows say
    what that result was computed with, which a µm/px typed in since (for a run that was then
    cancelled) does not change."""
    w, h = slide.dimensions
    levels = ", ".join(f"{lw}×{lh}" for lw, lh in slide.level_dimensions)
    mpp, source, origin = slide.mpp, slide.mpp_source, slide.mpp_origin
    if result is not None and result.mpp_used is not None:
        mpp = result.mpp_used
        source = str(result.slide.get("mpp_source", source))
        origin = str(result.slide.get("mpp_origin", origin))
    if mpp:
        mpp_text = f"{mpp:.4g} µm/px ({source})"
        if origin != "file":
            given = "given instead of the file's" if slide.file_mpp is not None else "the file records none"
            mpp_text += f", ASSUMED: {given}"
        size = f"{w} × {h} px  ({w * mpp / 1000:.2f} × {h * mpp / 1000:.2f} mm)"
    else:
        mpp_text = "not recorded: you will be asked before analysing"
        size = f"{w} × {h} px"
    return [
        ("File", slide.path.name if slide.path else slide.name),
        ("Format", slide.vendor),
        ("Size", size),
        ("Levels", f"{slide.level_count}: {levels}"),
        ("µm/px", mpp_text),
        ("Objective", f"{slide.objective_power:g}×" if slide.objective_power else "not recorded"),
    ]


class SlideInfoPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self._form = QFormLayout()
        self._form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addLayout(self._form)
        images = QHBoxLayout()
        self.label_image = QLabel()
        self.macro_image = QLabel()
        for widget in (self.label_image, self.macro_image):
            widget.setAlignment(Qt.AlignmentFlag.AlignCenter)
            images.addWidget(widget)
        layout.addLayout(images)
        layout.addStretch(1)
        self.clear()

    def clear(self) -> None:
        while self._form.rowCount():
            self._form.removeRow(0)
        self._form.addRow(QLabel("No slide open."))
        self.label_image.clear()
        self.macro_image.clear()
        self.label_image.setToolTip("")
        self.macro_image.setToolTip("")

    def show_slide(self, slide: Slide, associated: dict[str, NDArray[np.uint8]]) -> None:
        while self._form.rowCount():
            self._form.removeRow(0)
        for name, value in slide_facts(slide):
            text = QLabel(value)
            text.setWordWrap(True)
            text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self._form.addRow(f"{name}:", text)
        for key, widget in (("label", self.label_image), ("macro", self.macro_image)):
            pixels = associated.get(key)
            if pixels is None:
                widget.clear()
                widget.setText(f"no {key} image")
                continue
            pixmap = QPixmap.fromImage(rgb_to_qimage(pixels))
            widget.setPixmap(
                pixmap.scaled(
                    150,
                    150,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )
            widget.setToolTip(f"{key} image")
