"""The app and the command line analyse a slide through the same engine functions: the app's
analysis controller and ``equitriage-engine analyse`` write the same result files, byte for
byte, for the same real slide and the shipped model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from engine.batch import job_for
from engine.cli import main
from engine.outputs import HEATMAP, OVERLAY, REGIONS, SUMMARY, TILES, TISSUE
from gui.analysis_controller import AnalysisController
from gui.model_manager import ModelManager
from gui.results_panel import ResultsPanel
from gui.settings import Settings, analysis_params
from gui.stale import Latest
from gui.state import OverlayState
from gui.workers import JobPool, SlideOpener
from tests.conftest import REPO
from tests.gui.conftest import WAIT_MS

SHIPPED_MODEL = REPO / "assets" / "model.onnx"
THREADS = 1  # the same inference threads on both sides


def _summary_without_run_facts(folder: Path) -> dict[str, object]:
    data = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    for fact in ("created", "timings_s"):  # when it ran and how long it took
        data.pop(fact)
    return dict(data)


def test_the_app_and_the_cli_write_the_same_results(qtbot: QtBot, slides: Path, tmp_path: Path) -> None:
    if not SHIPPED_MODEL.is_file():
        pytest.skip("no shipped model in assets/")
    slide = tmp_path / "slides" / "CMU-1-Small-Region.svs"
    slide.parent.mkdir()
    shutil.copyfile(slides / "CMU-1-Small-Region.svs", slide)

    # The app: open the slide as the window does, analyse it with the analysis controller.
    settings = Settings(output_dir=str(tmp_path / "app"), model_path=str(SHIPPED_MODEL), threads=THREADS)
    jobs = JobPool(None, 2)
    models = ModelManager(jobs.pool, lambda: (settings.model_path, settings.threads))
    overlay = OverlayState()
    panel = ResultsPanel(overlay)
    qtbot.addWidget(panel)
    slides_tag = Latest()
    controller = AnalysisController(overlay, panel, models, slides_tag, jobs)
    slides_tag.take(slides_tag.ask())
    opened = SlideOpener(slides_tag.tag, job_for(slide), Path(settings.output_dir)).open()
    try:
        controller.start(opened, analysis_params(settings))
        qtbot.waitUntil(lambda: not controller.running and controller.saved is not None, timeout=WAIT_MS * 2)
    finally:
        controller.shutdown()
        jobs.wait()
        opened.slide.close()
    app_folder = opened.results_dir

    # The command line, on the same file with the same model and parameters.
    cli_out = tmp_path / "cli"
    argv = ["analyse", str(slide), "--out", str(cli_out), "--model", str(SHIPPED_MODEL)]
    assert main([*argv, "--threads", str(THREADS), "--quiet"]) == 0
    cli_folder = cli_out / job_for(slide).name

    assert app_folder.name == cli_folder.name  # one name for a slide's result folder
    tiles = (app_folder / TILES).read_bytes()
    assert tiles.count(b"\n") > 50  # a real analysis: many tissue tiles
    assert tiles == (cli_folder / TILES).read_bytes()
    for name in (HEATMAP, TISSUE, OVERLAY, REGIONS):
        assert (app_folder / name).read_bytes() == (cli_folder / name).read_bytes(), name
    assert _summary_without_run_facts(app_folder) == _summary_without_run_facts(cli_folder)
