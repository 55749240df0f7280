"""Pieces of the main window's layout: the side panel beside the viewer, and the status bar."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QScrollArea, QSizePolicy, QStatusBar, QTabWidget, QVBoxLayout, QWidget

from gui.info_panel import SlideInfoPanel
from gui.overview import Overview
from gui.results_panel import ResultsPanel

NOT_A_DIAGNOSIS = "Triage aid, not a diagnosis: every slide must still be read by a pathologist."


class SidePanel(QWidget):
    """The disclaimer, the overview, and tabs of the analysis (results panel) and the slide's facts."""

    def __init__(
        self,
        overview: Overview,
        results_panel: ResultsPanel,
        info_panel: SlideInfoPanel,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.disclaimer = QLabel(NOT_A_DIAGNOSIS)
        self.disclaimer.setWordWrap(True)
        self.disclaimer.setStyleSheet("QLabel { color: #444; background: #eef; padding: 3px; }")
        layout.addWidget(self.disclaimer)
        # The overview keeps its height and the panel scrolls rather than squeezing: a verdict
        # appearing never moves the Analyse and Cancel buttons.
        overview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        layout.addWidget(overview)
        self.tabs = QTabWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(results_panel)
        self.tabs.addTab(scroll, "Analysis")
        self.tabs.addTab(info_panel, "Slide")
        layout.addWidget(self.tabs, 1)


class ElidingStatusBar(QStatusBar):
    """Long messages are cut with "…" before the permanent widgets (full text in the tooltip),
    so they never run into the model label."""

    def showMessage(self, text: str, timeout: int | None = 0) -> None:  # noqa: N802 (Qt API)
        permanent = sum(
            w.sizeHint().width() + 12 for w in self.findChildren(QLabel) if w.property("permanent")
        )
        room = max(40, self.width() - permanent - 24)
        shown = self.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, room)
        self.setToolTip(text if shown != text else "")
        super().showMessage(shown, timeout or 0)
