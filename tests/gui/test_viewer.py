"""Open real slides, read the facts, zoom and pan; tiles come from the level that fits the zoom."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QWheelEvent
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from engine.slide import OpenSlideSlide
from gui.main_window import MainWindow
from tests.gui.conftest import WAIT_MS, open_slide_and_wait


def _form_text(window: MainWindow) -> str:
    return " | ".join(w.text() for w in window.info_panel.findChildren(QLabel))


def test_open_shows_facts_and_associated_images(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    text = _form_text(window)
    assert "aperio" in text and "2220 × 2967" in text and "0.499" in text and "20×" in text
    assert not window.info_panel.label_image.pixmap().isNull()
    assert not window.info_panel.macro_image.pixmap().isNull()
    assert window.windowTitle().startswith("CMU-1-Small-Region")
    assert str(cmu.resolve()) in window.settings.recent_files


def test_slide_without_mpp_says_so(qtbot: QtBot, window: MainWindow, slides: Path) -> None:
    open_slide_and_wait(qtbot, window, slides / "tcga-cr-7395-01a-01-ts1.svs")
    assert "asked before analysing" in _form_text(window)
    assert "no label image" in window.info_panel.label_image.text()


def test_wheel_zoom_around_cursor_and_tiles_load(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    viewer = window.viewer
    fit = viewer.viewport.zoom
    cursor = QPointF(viewer.width() * 0.3, viewer.height() * 0.4)
    before = viewer.viewport.to_l0(cursor.x(), cursor.y())
    for _ in range(4):
        event = QWheelEvent(
            cursor,
            viewer.mapToGlobal(cursor),
            QPoint(),
            QPoint(0, 120),
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        viewer.wheelEvent(event)
    qtbot.waitUntil(lambda: viewer._target_zoom is None, timeout=WAIT_MS)
    assert viewer.viewport.zoom > fit * 2
    after = viewer.viewport.to_l0(cursor.x(), cursor.y())
    assert abs(after[0] - before[0]) < 2 and abs(after[1] - before[1]) < 2
    assert viewer.needs_tiles() and viewer.wanted_tiles()
    qtbot.waitUntil(viewer.tiles_complete, timeout=WAIT_MS)
    assert viewer.loader.reads > 0


def test_drag_pans_and_keys_zoom(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    viewer = window.viewer
    viewer.set_zoom_now(4.0)
    cx, cy = viewer.viewport.l0_cx, viewer.viewport.l0_cy
    start = QPoint(300, 300)
    qtbot.mousePress(viewer, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(viewer, QPoint(200, 250))
    qtbot.mouseRelease(viewer, Qt.MouseButton.LeftButton, pos=QPoint(200, 250))
    zoom = viewer.viewport.zoom
    assert viewer.viewport.l0_cx == cx + 100 / zoom
    assert viewer.viewport.l0_cy == cy + 50 / zoom
    qtbot.keyClick(viewer, Qt.Key.Key_Right)
    assert viewer.viewport.l0_cx > cx + 100 / zoom
    qtbot.keyClick(viewer, Qt.Key.Key_0)
    assert viewer.viewport.zoom == viewer.viewport.fit_zoom
    qtbot.keyClick(viewer, Qt.Key.Key_Plus)
    qtbot.waitUntil(lambda: viewer._target_zoom is None, timeout=WAIT_MS)
    assert viewer.viewport.zoom == viewer.viewport.fit_zoom * 2


def test_pyramid_level_follows_zoom_and_overview_moves_view(
    qtbot: QtBot, window: MainWindow, slides: Path
) -> None:
    open_slide_and_wait(qtbot, window, slides / "tcga-cr-7395-01a-01-ts1.svs")
    viewer = window.viewer
    viewer.set_zoom_now(0.6 / viewer.viewport.zoom)
    assert viewer.current_level() == 0
    viewer.set_zoom_now(0.45 / viewer.viewport.zoom)
    assert viewer.current_level() == 1
    qtbot.waitUntil(viewer.tiles_complete, timeout=WAIT_MS)
    wanted = viewer.wanted_tiles()
    assert wanted and all(key[0] == 1 for key in wanted)
    assert all(key in viewer.loader.cache for key in wanted)
    overview = window.overview
    rect = overview._image_rect()
    qtbot.mouseClick(
        overview,
        Qt.MouseButton.LeftButton,
        pos=QPoint(int(rect.x() + rect.width() * 0.25), int(rect.y() + rect.height() * 0.75)),
    )
    w, h = viewer.slide.dimensions  # type: ignore[union-attr]
    assert abs(viewer.viewport.l0_cx - w * 0.25) < w * 0.02
    assert abs(viewer.viewport.l0_cy - h * 0.75) < h * 0.02


def test_tile_requests_out_of_view_are_dropped(qtbot: QtBot, window: MainWindow, slides: Path) -> None:
    open_slide_and_wait(qtbot, window, slides / "tcga-cr-7395-01a-01-ts1.svs")
    viewer = window.viewer
    viewer.set_zoom_now(4.0 / viewer.viewport.zoom)
    for i in range(30):  # a fast pan across the slide
        viewer.pan_by(-60.0, -40.0 * (i % 3))
    qtbot.waitUntil(viewer.tiles_complete, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: viewer.loader.pending() == 0, timeout=WAIT_MS)
    assert viewer.loader.reads < 30 * len(viewer.wanted_tiles())


def test_drop_a_file_opens_it(qtbot: QtBot, window: MainWindow, cmu: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(cmu))])
    event = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.opened is not None, timeout=WAIT_MS)
    assert window.opened is not None and window.opened.path == cmu


def test_loader_drops_requests_that_lapsed(qtbot: QtBot, slides: Path) -> None:
    from engine.slide import open_slide
    from gui.tile_loader import TileLoader

    with open_slide(slides / "tcga-cr-7395-01a-01-ts1.svs") as slide:
        loader = TileLoader(threads=1, cache_bytes=4 * 1024 * 1024)
        loader.set_slide(slide)
        early = [(0, x, y) for y in range(6) for x in range(6)]
        loader.request(early)
        loader.request([(1, 0, 0)])  # the view moved on before most were read
        qtbot.waitUntil(lambda: (1, 0, 0) in loader.cache, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: loader.pending() == 0, timeout=WAIT_MS)
        assert loader.dropped > 0
        assert loader.reads + loader.dropped == len(early) + 1
        assert loader.cache.nbytes <= 4 * 1024 * 1024  # bounded
        loader.set_slide(None)
        loader.wait()


def _closed(osr: object) -> bool:
    try:
        _ = osr.level_count  # type: ignore[attr-defined]
    except ctypes.ArgumentError:  # openslide-python: "Passing closed slide object"
        return True
    return False


def test_closing_a_slide_never_waits_for_its_reads_on_the_ui_thread(
    qtbot: QtBot, window: MainWindow, cmu: Path
) -> None:
    open_slide_and_wait(qtbot, window, cmu)
    assert window.opened is not None and isinstance(window.opened.slide, OpenSlideSlide)
    slide = window.opened.slide
    reading, finish, read = threading.Event(), threading.Event(), threading.Event()
    real = slide._osr.read_region

    def stalled(*args: object) -> object:  # a read from a stalled network share
        reading.set()
        finish.wait(WAIT_MS / 1000)
        read.set()
        return real(*args)

    slide._osr.read_region = stalled
    reader = threading.Thread(target=slide.read_region, args=((0, 0), 0, (8, 8)))
    reader.start()
    assert reading.wait(WAIT_MS / 1000)
    window.close_slide()
    returned_while_reading = not read.is_set()
    finish.set()
    reader.join()
    assert returned_while_reading
    qtbot.waitUntil(lambda: _closed(slide._osr), timeout=WAIT_MS)  # closed once the read ended
