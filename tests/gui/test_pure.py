"""Pure parts of the GUI: tile maths, the LRU cache, the scale bar, the viewport, Qt-free state."""

from __future__ import annotations

import dataclasses
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.batch import SlideJob, SlideOutcome
from engine.errors import CancelledError
from engine.slide import ArraySlide
from engine.tiling import TileGrid
from gui.batch_state import BatchRow, BatchState, listed
from gui.info_panel import slide_facts
from gui.scale_bar import format_length, format_magnification, magnification, nice_length_um, scale_bar
from gui.state import OverlayState, Viewport, eta_s, format_duration
from gui.tile_cache import TileCache, level_for_zoom, tile_spec, visible_tiles
from tests.summaries import summary_of

DIMS = ((4443, 3567), (2221, 1783))
DSS = (1.0, 2.0005)


def test_cache_is_bounded_and_lru() -> None:
    cache: TileCache[bytes] = TileCache(1000, len)
    for i in range(5):
        cache.put((0, i, 0), b"x" * 300)
    assert cache.nbytes <= 1000
    assert len(cache) == 3
    assert (0, 0, 0) not in cache and (0, 4, 0) in cache
    assert cache.get((0, 2, 0)) is not None  # 2 becomes most recent
    cache.put((0, 5, 0), b"y" * 300)
    assert (0, 2, 0) in cache and (0, 3, 0) not in cache
    cache.put((0, 5, 0), b"z" * 100)  # replacing updates the byte count
    assert cache.nbytes == 700
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_level_for_zoom() -> None:
    assert level_for_zoom(DSS, 1.0) == 0
    assert level_for_zoom(DSS, 0.6) == 0  # level 1 would be coarser than the screen
    assert level_for_zoom(DSS, 0.49) == 1
    assert level_for_zoom(DSS, 0.01) == 1
    assert level_for_zoom(DSS, 4.0) == 0


def test_visible_tiles_cover_the_view_centre_first() -> None:
    keys = visible_tiles((0, 0, 4443, 3567), 1, DIMS, DSS, 256)
    assert len(keys) == math.ceil(2221 / 256) * math.ceil(1783 / 256)
    assert visible_tiles((1000, 1000, 10, 10), 0, DIMS, DSS, 256) == [(0, 3, 3)]
    assert visible_tiles((-500, -500, 100, 100), 0, DIMS, DSS, 256) == []
    centre = visible_tiles((0, 0, 2560, 2560), 0, DIMS, DSS, 256)[0]
    assert centre[1] in (4, 5) and centre[2] in (4, 5)
    spec = tile_spec((1, 8, 6), DIMS, DSS, 256)
    assert (spec.lvl_w, spec.lvl_h) == (2221 - 8 * 256, 1783 - 6 * 256)  # clipped at the edge
    assert spec.l0_x == pytest.approx(8 * 256 * 2.0005)


@pytest.mark.parametrize(
    ("um_per_px", "expected"),
    [(0.499, 50.0), (1.0, 100.0), (2.0, 200.0), (3.0, 200.0), (10.0, 1000.0), (0.01, 1.0)],
)
def test_nice_lengths(um_per_px: float, expected: float) -> None:
    assert nice_length_um(um_per_px, 120) == pytest.approx(expected)
    bar_px, _ = scale_bar(um_per_px, 120)
    assert 40 <= bar_px <= 120


def test_labels_and_magnification() -> None:
    assert format_length(250) == "250 µm"
    assert format_length(2000) == "2 mm"
    assert format_length(0.5) == "0.5 µm"
    assert magnification(0.5, 0.25, 40.0) == 20.0
    assert magnification(1.0, 0.5, None) == pytest.approx(20.0)
    assert magnification(1.0, None, None) is None
    assert format_magnification(None, 0.5) == "50 %"
    assert format_magnification(2.5, 1) == "2.5×"


def test_viewport_zoom_keeps_the_point_under_the_cursor() -> None:
    vp = Viewport(l0_size=(4000, 3000), screen_size=(800, 600))
    vp.fit()
    before = vp.to_l0(200, 150)
    vp.zoom_at(2.0, 200, 150)
    after = vp.to_l0(200, 150)
    assert after == pytest.approx(before)
    zoom = vp.zoom
    vp.pan(100, 0)
    assert vp.to_l0(300, 150) == pytest.approx(after)
    assert vp.zoom == zoom
    vp.zoom_at(1e6, 0, 0)
    assert vp.zoom == 4.0  # MAX_ZOOM
    vp.show_l0_box((1000, 1000, 1100, 1050))
    assert (vp.l0_cx, vp.l0_cy) == pytest.approx((1050, 1025))
    x, y, w, h = vp.visible_l0_rect()
    assert x <= 1000 and x + w >= 1100 and y <= 1000 and y + h >= 1050


def test_eta() -> None:
    assert eta_s(0, 10, 5) is None
    assert eta_s(5, 10, 5) == pytest.approx(5)
    assert format_duration(None) == "–"
    assert format_duration(75) == "1 min 15 s"


def test_overlay_state_events_and_regions() -> None:
    grid = TileGrid(100.0, 100.0, 4, 3, 95, 95)
    state = OverlayState()
    seen: list[str] = []
    state.subscribe(seen.append)
    state.start(grid, tile_threshold=0.5, cell_mm2=0.01)
    assert np.isnan(state.probs).all()
    state.add_tiles(np.array([0, 1]), np.array([0, 0]), np.array([0.9, 0.8], np.float32))
    state.add_tiles(np.array([3]), np.array([2]), np.array([0.2], np.float32))
    state.update_regions()
    assert len(state.regions) == 1 and len(state.regions[0].cells) == 2
    state.set_threshold(0.85)
    assert np.isfinite(state.shown_probs()).sum() == 1
    state.update_regions()
    assert len(state.regions[0].cells) == 1
    state.set_opacity(2.0)
    assert state.opacity == 1.0
    assert {"probs", "regions", "threshold", "style"} <= set(seen)
    assert state.l0_extent() == (0.0, 0.0, 400.0, 300.0)


def test_batch_state(tmp_path: Path) -> None:
    jobs = [SlideJob(tmp_path / f"{n}.svs", n) for n in ("a", "b")]
    state = BatchState()
    state.load(tmp_path, tmp_path / "out", jobs)
    assert [r.status for r in state.rows] == ["queued", "queued"]
    state.started(jobs[0])
    state.progress(jobs[0], 5, 10)
    assert state.rows[0].fraction == 0.5
    summary = summary_of(score=0.7, category="intermediate")
    state.finished(SlideOutcome(jobs[0], "ok", summary))
    state.finished(SlideOutcome(jobs[1], "failed", error="broken"))
    assert state.rows[0].score == 0.7 and state.rows[1].error == "broken"
    assert state.rows[0].category == "intermediate" and state.rows[0].model_version == "v1"
    assert state.counts() == (2, 2)


def test_a_folder_listing_can_be_stopped(tmp_path: Path) -> None:
    jobs = [SlideJob(tmp_path / f"{n}.svs", n) for n in ("a", "b")]
    cancel = threading.Event()
    assert [row.status for row in listed(jobs, tmp_path, cancel)] == ["queued", "queued"]
    cancel.set()  # the window closes, or another folder is opened
    with pytest.raises(CancelledError):
        listed(jobs, tmp_path, cancel)


def test_batch_state_a_slide_another_program_writes(tmp_path: Path) -> None:
    from engine.errors import Remedy

    jobs = [SlideJob(tmp_path / f"{n}.svs", n) for n in ("a", "b")]
    state = BatchState()
    state.load(tmp_path, tmp_path / "out", jobs)
    busy = SlideOutcome(jobs[0], "busy", error="a: being analysed by another process (pid 7)")
    state.finished(dataclasses.replace(busy, remedy=Remedy.WAIT_FOR_OTHER_RUN))
    row = state.rows[0]
    assert row.status == "busy" and "being analysed by another process" in row.error
    assert row.summary is None  # nothing of it on disk yet
    assert state.counts() == (1, 2)  # this triage is done with it
    state.mark_queued()  # a new triage tries it again
    assert row.status == "queued" and row.error == ""


def test_the_installed_pyside6_keeps_its_references(qtbot: object) -> None:
    """The pinned PySide6 passes the startup check, and many void calls leave None's count alone."""
    import sys

    from PySide6.QtCore import QTimer

    from gui import qt_guard

    assert qt_guard.leaking_singletons() == []
    qt_guard.check()
    before = sys.getrefcount(None)
    timer = QTimer()
    for _ in range(5000):
        timer.stop()
    assert sys.getrefcount(None) >= before - 100


def test_report_and_batch_row_show_the_score_method_and_region() -> None:
    from PIL import Image

    from engine.triage import explain_score
    from gui.batch_state import BatchRow
    from gui.report import ReportData, report_html

    new = summary_of(
        score=0.91,
        category="high suspicion",
        score_method="region_logistic",
        tumour_area_mm2=0.34,
        largest_region_mm2=0.3,
        thresholds={"tile": 0.5, "top_k": 10, "high": 0.73, "low": 0.1, "score_method": "region_logistic"},
    )
    old = summary_of(score=0.95, category="high suspicion", thresholds={"top_k": 10, "high": 0.9, "low": 0.5})
    assert "region" in explain_score(new.thresholds.score_method, new.thresholds.top_k)
    assert explain_score(old.thresholds.score_method, old.thresholds.top_k) == (
        "score = mean of the top 10 tile probabilities"
    )
    data = ReportData("s", [], new, [], np.zeros((4, 4, 3), np.uint8), Image.new("RGB", (4, 4)))
    page = report_html(data, {"thumbnail": "t", "overlay": "o"})
    assert "largest region 0.3 mm" in page and "best suspicious region" in page
    row = BatchRow(SlideJob(Path("s.svs"), "s"), status="done", summary=new)
    assert row.largest_region_mm2 == 0.3
    assert BatchRow(SlideJob(Path("s.svs"), "s"), status="done", summary=old).largest_region_mm2 is None


def test_the_open_dialog_offers_the_engines_slide_files() -> None:
    from engine.slide import SLIDE_SUFFIXES
    from gui.main_window import SLIDE_FILTER

    slides, everything = SLIDE_FILTER.split(";;")
    assert everything == "All files (*)"
    assert sorted(slides.removeprefix("Slides (").removesuffix(")").split()) == sorted(
        f"*{suffix}" for suffix in SLIDE_SUFFIXES
    )


def test_report_facts_give_the_mpp_the_result_used() -> None:
    slide = ArraySlide(np.zeros((40, 50, 3), np.uint8), mpp=None).with_mpp(0.25)  # typed in since
    made_with = {"mpp": 0.5, "mpp_used": 0.5, "mpp_source": "user", "mpp_origin": "override"}
    facts = dict(slide_facts(slide, summary_of(slide=made_with)))
    assert facts["µm/px"].startswith("0.5 µm/px") and "ASSUMED: the file records none" in facts["µm/px"]
    assert facts["Size"].endswith("(0.03 × 0.02 mm)")
    assert dict(slide_facts(slide))["µm/px"].startswith("0.25 µm/px")  # the slide as it is now


def test_the_category_tooltip_words_the_caveats(qtbot: object, tmp_path: Path) -> None:
    from PySide6.QtCore import Qt

    from gui.batch_view import COL_CATEGORY, COL_SCORE, BatchView

    jobs = [SlideJob(tmp_path / f"{n}.svs", n) for n in ("a", "b")]
    state = BatchState()
    state.load(tmp_path, tmp_path / "out", jobs)
    view = BatchView(state)
    qtbot.addWidget(view)  # type: ignore[attr-defined]
    slide = {"mpp_origin": "default", "mpp_used": 0.25}
    assumed = summary_of(score=0.7, category="intermediate", slide=slide)
    state.finished(SlideOutcome(jobs[0], "ok", assumed))
    state.finished(SlideOutcome(jobs[1], "ok", summary_of(score=0.2, category="intermediate")))
    tip = view.model.index(0, COL_CATEGORY).data(Qt.ItemDataRole.ToolTipRole)
    assert "µm/px 0.25 is ASSUMED" in tip
    assert view.model.index(1, COL_CATEGORY).data(Qt.ItemDataRole.ToolTipRole) == str(jobs[1].path)
    assert view.model.index(0, COL_SCORE).data(Qt.ItemDataRole.ToolTipRole) != tip


def test_a_triages_progress_never_goes_back(tmp_path: Path) -> None:
    """A saved result of an older model is analysed again: it counts once its outcome comes."""
    jobs = [SlideJob(tmp_path / f"{n}.svs", n) for n in ("a", "b", "c")]
    state = BatchState()
    old = summary_of(score=0.3, category="intermediate")
    rows = [BatchRow(jobs[0]), BatchRow(jobs[1], "saved", summary=old), BatchRow(jobs[2])]
    state.show_rows(tmp_path, tmp_path / "out", rows)
    assert state.counts() == (1, 3)  # before the triage: what is finished
    seen = []
    state.mark_queued()
    for job in jobs:
        state.started(job)
        seen.append(state.counts()[0])
        state.finished(SlideOutcome(job, "ok", summary_of(score=0.5, category="intermediate")))
        seen.append(state.counts()[0])
    assert seen == sorted(seen) == [0, 1, 1, 2, 2, 3]
    state.run_ended()
    assert state.counts() == (3, 3)
    rows = [BatchRow(jobs[0]), BatchRow(jobs[1], "saved", summary=old), BatchRow(jobs[2])]
    state.show_rows(tmp_path, tmp_path / "out", rows)
    state.mark_queued()  # this triage starts from 0 ...
    state.started(jobs[0])
    state.cancelled()  # ... and after a cancel what is finished counts: the saved result
    assert state.counts() == (1, 3)
