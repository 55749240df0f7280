"""The overview (minimap): the whole slide, the heatmap, and the viewer's viewport as a frame."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.heatmap import colourise
from gui.state import OverlayState, Viewport
from gui.tile_loader import rgba_to_qimage


class Overview(QWidget):
    """Click or drag to move the viewer there (``centre_requested`` in level-0 pixels)."""

    centre_requested = Signal(float, float)

    def __init__(self, overlay: OverlayState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overlay = overlay
        overlay.subscribe(self._on_overlay)
        self.setMinimumSize(160, 140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._thumb: QImage | None = None
        self._l0_size = (1, 1)
        self._viewport: Viewport | None = None
        self._heat: QImage | None = None
        self._heat_dirty = True

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(280, 170)

    def set_slide(self, thumbnail: QImage | None, l0_size: tuple[int, int]) -> None:
        self._thumb = thumbnail
        self._l0_size = l0_size
        self.update()

    def set_viewport(self, viewport: Viewport | None) -> None:
        self._viewport = viewport
        self.update()

    def _on_overlay(self, what: str) -> None:
        if what in ("probs", "threshold"):
            self._heat_dirty = True
        self.update()

    def _image_rect(self) -> QRectF:
        w, h = self._l0_size
        k = min((self.width() - 8) / max(w, 1), (self.height() - 8) / max(h, 1))
        return QRectF((self.width() - w * k) / 2, (self.height() - h * k) / 2, w * k, h * k)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(245, 245, 245))
        if self._thumb is None:
            p.setPen(QColor(120, 120, 120))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Overview")
            return
        target = self._image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawImage(target, self._thumb)
        k = target.width() / max(self._l0_size[0], 1)
        extent = self.overlay.l0_extent()
        if extent is not None and self.overlay.visible:
            if self._heat_dirty:
                probs = self.overlay.shown_probs()
                heat = colourise(probs, floor=self.overlay.threshold)
                self._heat = rgba_to_qimage(heat) if probs.size else None
                self._heat_dirty = False
            if self._heat is not None:
                x0, y0, x1, y1 = extent
                p.setOpacity(self.overlay.opacity)
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
                p.drawImage(
                    QRectF(target.x() + x0 * k, target.y() + y0 * k, (x1 - x0) * k, (y1 - y0) * k),
                    self._heat,
                )
                p.setOpacity(1.0)
        if self._viewport is not None:
            x, y, w, h = self._viewport.visible_l0_rect()
            frame = QRectF(target.x() + x * k, target.y() + y * k, w * k, h * k)
            frame = frame.intersected(target.adjusted(-1, -1, 1, 1))
            pen = QPen(QColor(220, 30, 30))
            pen.setWidthF(2.0)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(frame)

    def _request(self, pos: QPointF) -> None:
        if self._thumb is None:
            return
        target = self._image_rect()
        k = target.width() / max(self._l0_size[0], 1)
        self.centre_requested.emit((pos.x() - target.x()) / k, (pos.y() - target.y()) / k)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._request(event.position())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._request(event.position())
