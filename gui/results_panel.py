"""Analysis controls and results: run/cancel with progress, verdict, heatmap settings, regions."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.caveats import caveats
from engine.heatmap import legend_bar
from engine.summary import SlideSummary
from engine.triage import explain_score
from gui.state import OverlayState

CATEGORY_COLOURS = {
    "high suspicion": "#b2182b",
    "intermediate": "#e08214",
    "low suspicion": "#1a7837",
    "no tissue": "#666666",
}
CAVEAT_COLOUR = "#8a4b00"  # a result with caveats is never shown in green
PROGRESS_LINES = 2  # the progress text's height is kept, so the buttons above never move


class Legend(QWidget):
    """The colour map from 0 to 1 with the display and tile thresholds marked."""

    def __init__(self, overlay: OverlayState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overlay = overlay
        overlay.subscribe(lambda _what: self.update())
        self.setMinimumHeight(38)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(240, 38)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        bar = QRectF(6, 4, self.width() - 12, 12)
        row = legend_bar(self.overlay.threshold)
        p.drawImage(bar, QImage(row.tobytes(), len(row), 1, 3 * len(row), QImage.Format.Format_RGB888))
        p.setPen(QColor(60, 60, 60))
        p.drawRect(bar)
        fm = p.fontMetrics()
        for value, text in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
            x = bar.x() + value * bar.width()
            p.drawLine(int(x), int(bar.bottom()), int(x), int(bar.bottom()) + 3)
            w = fm.horizontalAdvance(text)
            p.drawText(
                int(min(max(x - w / 2, 0), self.width() - w)), int(bar.bottom()) + 4 + fm.ascent(), text
            )
        if self.overlay.threshold > 0:
            x = bar.x() + self.overlay.threshold * bar.width()
            p.setPen(QColor(0, 0, 0))
            p.drawLine(int(x), int(bar.y()) - 2, int(x), int(bar.bottom()) + 2)


class ResultsPanel(QWidget):
    """Emits ``analyse_requested``, ``cancel_requested`` and ``region_activated(index)``."""

    analyse_requested = Signal()
    cancel_requested = Signal()
    region_activated = Signal(int)
    regions_wanted = Signal()  # the threshold settled: regions need finding again

    def __init__(self, overlay: OverlayState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overlay = overlay
        overlay.subscribe(self._on_overlay)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)

        run_box = QGroupBox("Analysis")
        run = QVBoxLayout(run_box)
        buttons = QHBoxLayout()
        self.analyse_button = QPushButton("Analyse")
        self.analyse_button.setToolTip("Run the model over every tissue tile (Ctrl+R)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.analyse_button)
        buttons.addWidget(self.cancel_button)
        run.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%p %")
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        self.progress_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.progress_label.setFixedHeight(
            self.progress_label.fontMetrics().lineSpacing() * PROGRESS_LINES + 4
        )
        run.addWidget(self.progress)
        run.addWidget(self.progress_label)
        layout.addWidget(run_box)
        self.analyse_button.clicked.connect(self.analyse_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)

        verdict_box = QGroupBox("Verdict")
        verdict = QVBoxLayout(verdict_box)
        self.score_label = QLabel("Not analysed")
        font = self.score_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.score_label.setFont(font)
        self.category_label = QLabel("")
        self.category_label.setTextFormat(Qt.TextFormat.RichText)
        self.details_label = QLabel("")
        self.details_label.setWordWrap(True)
        self.caveat_label = QLabel("")
        self.caveat_label.setWordWrap(True)
        self.caveat_label.setStyleSheet(
            f"QLabel {{ color: {CAVEAT_COLOUR}; background: #fff3d6; border: 1px solid {CAVEAT_COLOUR};"
            " padding: 3px; font-weight: bold; }"
        )
        self.caveat_label.hide()
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        for w in (
            self.score_label,
            self.category_label,
            self.caveat_label,
            self.details_label,
            self.model_label,
        ):
            verdict.addWidget(w)
        layout.addWidget(verdict_box)

        heat_box = QGroupBox("Heatmap")
        heat = QFormLayout(heat_box)
        self.show_heatmap = QCheckBox("Show (H)")
        self.show_heatmap.setChecked(overlay.visible)
        heat.addRow(self.show_heatmap)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(overlay.opacity * 100))
        heat.addRow("Opacity", self.opacity_slider)
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_slider.setValue(round(overlay.threshold * 100))
        self.threshold_label = QLabel()
        row = QHBoxLayout()
        row.addWidget(self.threshold_slider, 1)
        row.addWidget(self.threshold_label)
        heat.addRow("Threshold", row)
        heat.addRow(Legend(overlay))
        layout.addWidget(heat_box)
        self.show_heatmap.toggled.connect(overlay.set_visible)
        self.opacity_slider.valueChanged.connect(lambda v: overlay.set_opacity(v / 100))
        self.threshold_slider.valueChanged.connect(lambda v: overlay.set_threshold(v / 100))
        self.threshold_slider.sliderReleased.connect(self.regions_wanted)
        self.threshold_slider.valueChanged.connect(self._threshold_changed)
        self._update_threshold_label()

        regions_box = QGroupBox("Suspicious regions")
        regions = QVBoxLayout(regions_box)
        self.regions = QTreeWidget()
        self.regions.setHeaderLabels(["#", "max p", "mean p", "area mm²"])
        self.regions.setRootIsDecorated(False)
        self.regions.setUniformRowHeights(True)
        self.regions.itemClicked.connect(self._item_clicked)
        self.regions.itemActivated.connect(self._item_clicked)
        # header and a few rows stay visible even when the list is empty
        self.regions.setMinimumHeight(
            self.regions.header().sizeHint().height() + 4 * self.fontMetrics().height() + 8
        )
        regions.addWidget(self.regions)
        layout.addWidget(regions_box, 1)

    # -- running -----------------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self.analyse_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def set_progress(self, done: int, total: int, text: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress_label.setText(text)

    # -- verdict -----------------------------------------------------------------------------
    def clear_verdict(self, text: str = "Not analysed") -> None:
        self.score_label.setText(text)
        self.category_label.setText("")
        self.details_label.setText("")
        self.caveat_label.setText("")
        self.caveat_label.hide()
        self.model_label.setText("")

    def show_verdict(self, summary: SlideSummary, note: str = "") -> None:
        """The slide score and triage category of a finished analysis."""
        score = summary.score
        category = summary.category
        self.score_label.setText("Score –" if score is None else f"Score {score:.3f}")
        notes = caveats(summary)
        colour = CAVEAT_COLOUR if notes else CATEGORY_COLOURS.get(category, "#333333")
        badge = category.upper() + (" ?" if notes else "")
        self.category_label.setText(
            f'<span style="background:{colour}; color:white; padding:2px 6px;">&nbsp;{badge}&nbsp;</span>'
        )
        self.caveat_label.setText("⚠ " + "\n⚠ ".join(notes))
        self.caveat_label.setVisible(bool(notes))
        th = summary.thresholds
        tiles = summary.tiles
        largest = summary.verdict.largest_region_mm2
        region = "" if largest is None else f", largest region {largest:g} mm²"
        self.details_label.setText(
            f"{tiles.analysed} tissue tiles, {tiles.positive} above "
            f"{th.tile:g}; est. tumour area {summary.verdict.tumour_area_mm2:g} mm²{region}\n"
            f"Categories: high ≥ {th.high:g}, intermediate ≥ {th.low:g} "
            f"({explain_score(th.score_method, th.top_k)})"
        )
        made = summary.created[:19].replace("T", " ")
        text = f"Model {summary.model.version} · {made} UTC"
        if note:
            text += f"\n{note}"
        self.model_label.setText(text)

    # -- heatmap and regions -----------------------------------------------------------------
    def _threshold_changed(self, value: int) -> None:
        self._update_threshold_label()
        if not self.threshold_slider.isSliderDown():
            self.regions_wanted.emit()

    def _update_threshold_label(self) -> None:
        self.threshold_label.setText(f"{self.threshold_slider.value() / 100:.2f}")

    def _on_overlay(self, what: str) -> None:
        if what == "regions":
            self.regions.clear()
            items = []
            for i, r in enumerate(self.overlay.regions, start=1):
                item = QTreeWidgetItem(
                    [str(i), f"{r.max_prob:.3f}", f"{r.mean_prob:.3f}", f"{r.area_mm2:.3f}"]
                )
                item.setData(0, Qt.ItemDataRole.UserRole, i - 1)
                items.append(item)
            self.regions.addTopLevelItems(items)
            for col in range(4):
                self.regions.resizeColumnToContents(col)
        elif what == "style":
            self.show_heatmap.setChecked(self.overlay.visible)

    def _item_clicked(self, item: QTreeWidgetItem, column: int = 0) -> None:
        self.region_activated.emit(int(item.data(0, Qt.ItemDataRole.UserRole)))
