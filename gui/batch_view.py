"""Folder triage: a sortable table of every slide of a folder, analysed one after another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.caveats import caveats, short_flags
from engine.triage import explain_score
from gui.batch_state import STATUS_ORDER, BatchRow, BatchState
from gui.results_panel import CATEGORY_COLOURS, CAVEAT_COLOUR

COLUMNS = ("Slide", "Status", "Progress", "Score", "Category", "Region mm²", "Model", "Message")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
COL_PROGRESS = 2
COL_SCORE = 3
COL_CATEGORY = 4
COL_REGION = 5
DEFAULT_MPP_CHOICES = (
    ("none: report them as failed", None),
    ("40x scan: 0.25 µm/px", 0.25),
    ("20x scan: 0.5 µm/px", 0.5),
)
Index = QModelIndex | QPersistentModelIndex


class BatchTableModel(QAbstractTableModel):
    def __init__(self, state: BatchState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        state.subscribe(self._on_state)

    def _on_state(self, what: str) -> None:
        if what == "rows":
            self.beginResetModel()
            self.endResetModel()
        elif what.startswith("row:"):
            i = int(what[4:])
            self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008 (Qt API)
        return 0 if parent.isValid() else len(self.state.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(  # noqa: N802
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def row(self, i: int) -> BatchRow:
        return self.state.rows[i]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.state.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, col)
        if role == SORT_ROLE:
            return self._sort_value(row, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_SCORE and row.summary is not None:
                th = row.summary.thresholds
                return explain_score(th.score_method, th.top_k)
            lines = caveats(row.summary) if col == COL_CATEGORY and row.summary is not None else []
            return "\n".join(lines) or row.error or str(row.job.path)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == COL_CATEGORY and row.summary is not None and short_flags(row.summary):
                return QColor(CAVEAT_COLOUR)  # never green with a caveat
            if col == COL_CATEGORY and row.category in CATEGORY_COLOURS:
                return QColor(CATEGORY_COLOURS[row.category])
            if row.status == "failed":
                return QColor("#b2182b")
        return None

    @staticmethod
    def _text(row: BatchRow, col: int) -> str:
        if col == 0:
            return row.job.label
        if col == 1:
            return row.status
        if col == COL_PROGRESS:
            return "–" if row.status in ("failed", "busy") else f"{row.fraction * 100:.0f} %"
        if col == COL_SCORE:
            return "" if row.score is None else f"{row.score:.3f}"
        if col == COL_CATEGORY:
            flags = "" if row.summary is None else short_flags(row.summary)
            return f"{row.category} · {flags}" if flags else row.category
        if col == COL_REGION:
            return "" if row.largest_region_mm2 is None else f"{row.largest_region_mm2:.3f}"
        if col == 6:
            return row.model_version
        return row.error

    @staticmethod
    def _sort_value(row: BatchRow, col: int) -> Any:
        if col == COL_SCORE:
            return -1.0 if row.score is None else row.score
        if col == COL_REGION:
            return -1.0 if row.largest_region_mm2 is None else row.largest_region_mm2
        if col == COL_PROGRESS:
            return row.fraction
        if col == 1:
            return STATUS_ORDER.get(row.status, 9)
        return BatchTableModel._text(row, col).lower()


class ProgressDelegate(QStyledItemDelegate):
    """Draws the progress column as a bar."""

    def paint(self, painter: Any, option: QStyleOptionViewItem, index: Index) -> None:
        if index.data(Qt.ItemDataRole.DisplayRole) == "–":  # failed: no bar
            super().paint(painter, option, index)
            return
        value = index.data(SORT_ROLE)
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 3, -2, -3)
        bar.minimum, bar.maximum = 0, 100
        bar.progress = round(float(value or 0.0) * 100)
        bar.text = f"{bar.progress} %"
        bar.textVisible = True
        style = QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


class BatchView(QWidget):
    """Emits ``choose_folder_requested``, ``start_requested``, ``cancel_requested`` and
    ``open_requested(slide path, output folder)`` on double-click."""

    choose_folder_requested = Signal()
    start_requested = Signal()
    cancel_requested = Signal()
    open_requested = Signal(object, object)

    def __init__(self, state: BatchState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        state.subscribe(self._on_state)
        layout = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.folder_label = QLabel("Choose a folder of slides to triage.")
        self.choose_button = QPushButton("Choose folder…")
        self.start_button = QPushButton("Analyse all")
        self.cancel_button = QPushButton("Cancel")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(False)
        bar.addWidget(self.folder_label, 1)
        for b in (self.choose_button, self.start_button, self.cancel_button):
            bar.addWidget(b)
        layout.addLayout(bar)
        mpp_row = QHBoxLayout()
        mpp_label = QLabel("Slides that do not record their µm/px:")
        self.default_mpp = QComboBox()
        for text, value in DEFAULT_MPP_CHOICES:
            self.default_mpp.addItem(text, value)
        self.default_mpp.setToolTip(
            "Used only for slides whose file records no µm/px; their results are marked "
            "'µm/px assumed'. Slides with their own µm/px always use it."
        )
        mpp_label.setBuddy(self.default_mpp)
        mpp_row.addWidget(mpp_label)
        mpp_row.addWidget(self.default_mpp)
        mpp_row.addStretch(1)
        layout.addLayout(mpp_row)
        self.overall = QProgressBar()
        self.overall.setFormat("")  # no count until there is a folder
        self.overall.setRange(0, 1)
        self.overall.setValue(0)
        layout.addWidget(self.overall)

        self.model = BatchTableModel(state, self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setDynamicSortFilter(True)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_SCORE, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(self._double_clicked)
        layout.addWidget(self.table, 1)
        self.choose_button.clicked.connect(self.choose_folder_requested)
        self.start_button.clicked.connect(self.start_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)

    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running and bool(self.state.rows))
        self.cancel_button.setEnabled(running)
        self.choose_button.setEnabled(not running)
        self.default_mpp.setEnabled(not running)

    def default_mpp_value(self) -> float | None:
        """The µm/px for slides that record none (None: such slides fail with a message)."""
        value = self.default_mpp.currentData()
        return None if value is None else float(value)

    def row_at(self, view_row: int) -> BatchRow:
        source = self.proxy.mapToSource(self.proxy.index(view_row, 0))
        return self.state.rows[source.row()]

    def _on_state(self, what: str) -> None:
        if what == "rows":
            folder = self.state.folder
            self.folder_label.setText(f"{folder}: {len(self.state.rows)} slides" if folder else "No folder")
            self.start_button.setEnabled(bool(self.state.rows) and not self.cancel_button.isEnabled())
        finished, total = self.state.counts()
        self.overall.setRange(0, max(total, 1))
        self.overall.setValue(finished)
        self.overall.setFormat("%v of %m slides" if self.state.folder is not None else "")

    def _double_clicked(self, index: QModelIndex) -> None:
        row = self.state.rows[self.proxy.mapToSource(index).row()]
        self.open_requested.emit(row.job.path, self.state.out_dir or Path("."))
