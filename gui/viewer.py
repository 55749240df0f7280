"""The slide viewer: pyramid tiles, heatmap overlay, region outlines, scale bar, magnification.

Drawing uses only what is already in memory (the thumbnail, cached tiles, the heatmap image);
tiles are read by :class:`~gui.tile_loader.TileLoader` in the background, so panning never
waits for the disk.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QWidget

from engine.heatmap import colourise
from engine.slide import Slide, thumbnail_downsample
from gui.scale_bar import format_magnification, magnification, scale_bar
from gui.state import OverlayState, Viewport, outlined_regions
from gui.tile_cache import TILE_PX, level_for_zoom, tile_spec, visible_tiles
from gui.tile_loader import TileLoader, rgb_to_qimage, rgba_to_qimage

L0Box = tuple[float, float, float, float]
WHEEL_STEP = 1.25  # zoom factor per wheel notch
KEY_PAN_FRACTION = 0.2
REGION_SCREEN_UM_PER_PX = 1.0  # jump to regions at about 10x: close, with context around


class SlideViewer(QWidget):
    """Shows one slide; ``view_changed`` fires whenever the visible region moves."""

    view_changed = Signal()
    tile_failed = Signal(str)

    def __init__(self, overlay: OverlayState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setMinimumSize(320, 240)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.viewport = Viewport()
        self.overlay = overlay
        overlay.subscribe(self._on_overlay)
        self.loader = TileLoader(self)
        self.loader.tile_ready.connect(self._on_tile)
        self.loader.failed.connect(self.tile_failed)
        self._slide: Slide | None = None
        self._thumb: QImage | None = None
        self._thumb_ds = 1.0
        self._heat: QImage | None = None
        self._heat_dirty = True
        self._region_paths: list[QPainterPath] = []
        self._drag_from: QPointF | None = None
        self._target_zoom: float | None = None
        self._zoom_anchor = QPointF()
        self._animation = QTimer(self)
        self._animation.setInterval(16)
        self._animation.timeout.connect(self._animate_zoom)
        self.message = "Open a slide: File ▸ Open, drop a file here, or pick a recent one"

    # -- slide -------------------------------------------------------------------------------
    @property
    def slide(self) -> Slide | None:
        return self._slide

    def set_slide(self, slide: Slide | None, thumbnail: NDArray[np.uint8] | None = None) -> None:
        """Show ``slide`` fitted to the window; ``thumbnail`` (RGB) is drawn until tiles arrive."""
        self._animation.stop()
        self._target_zoom = None
        self.loader.set_slide(slide)
        self._slide = slide
        self._thumb = None
        if slide is not None:
            if thumbnail is not None:
                self._thumb = rgb_to_qimage(thumbnail)
                self._thumb_ds = thumbnail_downsample(slide.dimensions, thumbnail)
            self.viewport.l0_size = slide.dimensions
            self._sync_size()
            self.viewport.fit()
        self._view_changed()

    # -- view control ------------------------------------------------------------------------
    def fit(self) -> None:
        self.viewport.fit()
        self._view_changed()

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom around ``anchor`` (screen point; default: the centre), animated."""
        if self._slide is None:
            return
        self._zoom_anchor = anchor or QPointF(self.width() / 2, self.height() / 2)
        base = self._target_zoom or self.viewport.zoom
        self._target_zoom = base * factor
        if not self._animation.isActive():
            self._animation.start()

    def set_zoom_now(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom immediately (no animation)."""
        a = anchor or QPointF(self.width() / 2, self.height() / 2)
        self.viewport.zoom_at(factor, a.x(), a.y())
        self._view_changed()

    def pan_by(self, d_sx: float, d_sy: float) -> None:
        self.viewport.pan(d_sx, d_sy)
        self._view_changed()

    def centre_on(self, l0_x: float, l0_y: float, zoom: float | None = None) -> None:
        self.viewport.centre_on(l0_x, l0_y, zoom)
        self._view_changed()

    def show_box(self, box: L0Box) -> None:
        self._animation.stop()
        self._target_zoom = None
        mpp = self._slide.mpp if self._slide is not None else None
        cap = mpp / REGION_SCREEN_UM_PER_PX if mpp else 1.0
        self.viewport.show_l0_box(box, max_zoom=cap)
        self._view_changed()

    def current_level(self) -> int:
        if self._slide is None:
            return 0
        return level_for_zoom(self._slide.level_downsamples, self.viewport.zoom)

    def needs_tiles(self) -> bool:
        """Whether the thumbnail is too coarse for the current zoom."""
        return self._thumb is None or 1.0 / self.viewport.zoom < self._thumb_ds * 0.99

    def wanted_tiles(self) -> list[tuple[int, int, int]]:
        slide = self._slide
        if slide is None or not self.needs_tiles():
            return []
        return visible_tiles(
            self.viewport.visible_l0_rect(),
            self.current_level(),
            slide.level_dimensions,
            slide.level_downsamples,
            TILE_PX,
        )

    def tiles_complete(self) -> bool:
        return all(k in self.loader.cache for k in self.wanted_tiles())

    def _animate_zoom(self) -> None:
        if self._target_zoom is None:
            self._animation.stop()
            return
        current = self.viewport.zoom
        step = math.log(self._target_zoom / current)
        if abs(step) < 0.01:
            factor = self._target_zoom / current
            self._target_zoom = None
            self._animation.stop()
        else:
            factor = math.exp(step * 0.4)
        a = self._zoom_anchor
        self.viewport.zoom_at(factor, a.x(), a.y())
        if self.viewport.zoom != current * factor:  # hit a zoom limit
            self._target_zoom = None
            self._animation.stop()
        self._view_changed()

    def _view_changed(self) -> None:
        self.loader.request(self.wanted_tiles())
        self.update()
        self.view_changed.emit()

    def _sync_size(self) -> None:
        self.viewport.screen_size = (max(1, self.width()), max(1, self.height()))

    # -- overlay -----------------------------------------------------------------------------
    def _on_overlay(self, what: str) -> None:
        if what in ("probs", "threshold"):
            self._heat_dirty = True
        if what == "regions":
            self._region_paths = [self._region_path(r.rings) for r in self.overlay.regions]
        self.update()

    @staticmethod
    def _region_path(rings: tuple[tuple[tuple[float, float], ...], ...]) -> QPainterPath:
        path = QPainterPath()
        for ring in rings:
            path.moveTo(*ring[0])
            for x, y in ring[1:]:
                path.lineTo(x, y)
            path.closeSubpath()
        return path

    def _heat_image(self) -> QImage | None:
        if self._heat_dirty:
            self._heat_dirty = False
            probs = self.overlay.shown_probs()
            heat = colourise(probs, floor=self.overlay.threshold)
            self._heat = rgba_to_qimage(heat) if probs.size else None
        return self._heat

    # -- painting ----------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(236, 236, 236))
        slide = self._slide
        if slide is None:
            p.setPen(QColor(90, 90, 90))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
            return
        w, h = slide.dimensions
        p.fillRect(self._screen_rect((0, 0, w, h)), QColor(255, 255, 255))
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        if self._thumb is not None:
            self._draw_l0_image(p, self._thumb, (0, 0, w, h))
        if self.needs_tiles():
            self._draw_tiles(p, slide)
        self._draw_overlay(p)
        self._draw_hud(p, slide)

    def _draw_tiles(self, p: QPainter, slide: Slide) -> None:
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.viewport.zoom < 1.5)
        for key in self.wanted_tiles():
            image = self.loader.cache.get(key)
            if image is None:
                continue
            spec = tile_spec(key, slide.level_dimensions, slide.level_downsamples, TILE_PX)
            target = self._screen_rect((spec.l0_x, spec.l0_y, spec.l0_x + spec.l0_w, spec.l0_y + spec.l0_h))
            p.drawImage(target, image)

    def _draw_overlay(self, p: QPainter) -> None:
        extent = self.overlay.l0_extent()
        if extent is None or not self.overlay.visible:
            return
        heat = self._heat_image()
        if heat is not None:
            p.save()
            p.setOpacity(self.overlay.opacity)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            self._draw_l0_image(p, heat, extent)
            p.restore()
        if self._region_paths:
            vp = self.viewport
            p.save()
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            sw, sh = vp.screen_size
            p.translate(sw / 2 - vp.l0_cx * vp.zoom, sh / 2 - vp.l0_cy * vp.zoom)
            p.scale(vp.zoom, vp.zoom)
            p.setBrush(Qt.BrushStyle.NoBrush)
            pen = QPen(QColor(20, 20, 20, 170))
            pen.setCosmetic(True)
            pen.setWidthF(1.5)
            p.setPen(pen)
            for i in outlined_regions(len(self._region_paths), vp.zoom, vp.fit_zoom, self.overlay.selected):
                p.drawPath(self._region_paths[i])
            selected = self.overlay.selected
            if selected is not None and 0 <= selected < len(self._region_paths):
                pen = QPen(QColor(0, 200, 255))
                pen.setCosmetic(True)
                pen.setWidthF(3.0)
                p.setPen(pen)
                p.drawPath(self._region_paths[selected])
            p.restore()

    def _draw_hud(self, p: QPainter, slide: Slide) -> None:
        vp = self.viewport
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        p.setFont(font)
        fm = p.fontMetrics()
        mag = format_magnification(magnification(vp.zoom, slide.mpp, slide.objective_power), vp.zoom)
        source = f"level {self.current_level()}" if self.needs_tiles() else "overview image"
        text = f"{mag}   {source}"
        box = QRectF(8, 8, fm.horizontalAdvance(text) + 16, fm.height() + 8)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(255, 255, 255, 210))
        p.drawRoundedRect(box, 4, 4)
        p.setPen(QColor(20, 20, 20))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        if not slide.mpp:
            return
        bar_px, label = scale_bar(slide.mpp / vp.zoom)
        x0, y0 = 16.0, self.height() - 20.0
        back = QRectF(
            x0 - 8, y0 - fm.height() - 12, max(bar_px, fm.horizontalAdvance(label)) + 16, fm.height() + 24
        )
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(255, 255, 255, 210))
        p.drawRoundedRect(back, 4, 4)
        p.setBrush(QColor(20, 20, 20))
        p.drawRect(QRectF(x0, y0, bar_px, 5))
        p.setPen(QColor(20, 20, 20))
        p.drawText(QPointF(x0, y0 - 5), label)

    def _screen_rect(self, box: L0Box) -> QRectF:
        """Screen rectangle of a level-0 box, edges rounded so neighbouring tiles meet exactly."""
        sx0, sy0 = self.viewport.to_screen(box[0], box[1])
        sx1, sy1 = self.viewport.to_screen(box[2], box[3])
        return QRectF(round(sx0), round(sy0), round(sx1) - round(sx0), round(sy1) - round(sy0))

    def _draw_l0_image(self, p: QPainter, image: QImage, box: L0Box) -> None:
        """Draw ``image`` spanning level-0 ``box``, only the part on screen."""
        x0, y0, x1, y1 = box
        vx, vy, vw, vh = self.viewport.visible_l0_rect()
        cx0, cy0 = max(x0, vx), max(y0, vy)
        cx1, cy1 = min(x1, vx + vw), min(y1, vy + vh)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        kx = image.width() / (x1 - x0)
        ky = image.height() / (y1 - y0)
        # Whole source pixels, so nearest-neighbour cells keep their borders on screen.
        sx0, sy0 = math.floor((cx0 - x0) * kx), math.floor((cy0 - y0) * ky)
        sx1 = min(image.width(), math.ceil((cx1 - x0) * kx))
        sy1 = min(image.height(), math.ceil((cy1 - y0) * ky))
        source = QRectF(sx0, sy0, sx1 - sx0, sy1 - sy0)
        target = self._screen_rect((x0 + sx0 / kx, y0 + sy0 / ky, x0 + sx1 / kx, y0 + sy1 / ky))
        p.drawImage(target, image, source)

    # -- events ------------------------------------------------------------------------------
    def _on_tile(self, key: object) -> None:
        self.update()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        fitted = abs(self.viewport.zoom - self.viewport.fit_zoom) < 1e-9
        self._sync_size()
        if self._slide is not None and fitted:
            self.viewport.fit()
        self._view_changed()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        delta = event.angleDelta().y() or event.pixelDelta().y()
        if delta:
            self.zoom_by(WHEEL_STEP ** (delta / 120), event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_from = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._drag_from is not None:
            d = event.position() - self._drag_from
            self._drag_from = event.position()
            self.pan_by(d.x(), d.y())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self._drag_from = None
        self.unsetCursor()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        factor = 0.5 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 2.0
        self.zoom_by(factor, event.position())

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = Qt.Key(event.key())
        step_x = self.width() * KEY_PAN_FRACTION
        step_y = self.height() * KEY_PAN_FRACTION
        moves: dict[Qt.Key, tuple[float, float]] = {
            Qt.Key.Key_Left: (step_x, 0.0),
            Qt.Key.Key_Right: (-step_x, 0.0),
            Qt.Key.Key_Up: (0.0, step_y),
            Qt.Key.Key_Down: (0.0, -step_y),
        }
        if key in moves:
            self.pan_by(*moves[key])
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(2.0)
        elif key == Qt.Key.Key_Minus:
            self.zoom_by(0.5)
        elif key in (Qt.Key.Key_0, Qt.Key.Key_F, Qt.Key.Key_Home):
            self.fit()
        else:
            super().keyPressEvent(event)
