"""Resuming a batch: a stored analysis counts as finished only for exactly this input, model,
parameters and µm/px."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engine.batch import (
    analyse_file,
    discover_slides,
    is_finished,
    job_for,
    run_batch,
    saved_job,
    unique_jobs,
)
from engine.errors import CancelledError, SlideNotFoundError
from engine.identity import results_name
from engine.model import Model
from engine.pipeline import AnalysisParams
from engine.slide import PLAIN_IMAGE_SUFFIXES, SLIDE_SUFFIXES
from engine.summary import InputIdentity, SlideSummary
from tests.engine.conftest import synthetic_pixels

PARAMS = AnalysisParams()
IDENTITY = InputIdentity(path="/slides/a.svs", kind="file", fingerprint="f" * 64)


def document(model: Model, **slide: Any) -> dict[str, Any]:
    """A summary.json document of format 2 for ``slide`` facts."""
    return {
        "format_version": 2,
        "status": "ok",
        "input": dataclasses.asdict(IDENTITY),
        "model": {"sha256": model.sha256, "version": "v", "path": "m", "input_px": 95, "mpp": 0.972},
        "parameters": PARAMS.as_dict(model.contract.input_size),
        "tiles": dict.fromkeys(("grid_cols", "grid_rows", "grid_total", "tissue", "analysed", "positive"), 1)
        | {"l0_tile_px": 95.0, "l0_stride_px": 95.0},
        "score": 0.5,
        "category": "intermediate",
        "slide": slide,
    }


def stored(model: Model, **slide: Any) -> SlideSummary:
    return SlideSummary.from_json(document(model, **slide))


def is_done(summary: SlideSummary | None, model: Model, params: AnalysisParams, *mpps: float | None) -> bool:
    return is_finished(summary, IDENTITY, model, params, *mpps)


FILE = {"mpp_used": 0.5, "mpp": 0.5, "mpp_source": "openslide", "mpp_origin": "file", "file_mpp": 0.5}
DEFAULT = {"mpp_used": 0.25, "mpp": 0.25, "mpp_source": "default", "mpp_origin": "default", "file_mpp": None}
OVERRIDE = {"mpp_used": 0.3, "mpp": 0.3, "mpp_source": "user", "mpp_origin": "override", "file_mpp": 0.5}


@pytest.mark.parametrize(
    ("slide", "mpp", "default_mpp", "finished"),
    [
        (FILE, None, None, True),
        (FILE, None, 0.25, True),  # its own µm/px is used whatever the default
        (FILE, None, 0.9, True),
        (FILE, 0.5, None, True),
        (FILE, 0.3, None, False),
        (DEFAULT, None, 0.25, True),
        (DEFAULT, None, 0.3, False),
        (DEFAULT, None, None, True),  # nothing asked: keep what was given before
        (DEFAULT, 0.25, None, True),
        (OVERRIDE, 0.3, None, True),
        (OVERRIDE, None, 0.3, False),  # the file's own 0.5 would be used now
        (OVERRIDE, None, None, False),  # likewise: a plain re-run uses the file's own 0.5
    ],
)
def test_mpp_decides_whether_a_slide_is_redone(
    model: Model, slide: dict[str, Any], mpp: float | None, default_mpp: float | None, finished: bool
) -> None:
    assert is_done(stored(model, **slide), model, PARAMS, mpp, default_mpp) is finished


@pytest.mark.parametrize(
    ("slide", "default_mpp", "finished"),
    [
        ({"mpp_used": 0.5, "mpp": 0.5, "mpp_source": "openslide"}, 0.25, True),
        ({"mpp_used": 0.25, "mpp": 0.25, "mpp_source": "user"}, 0.25, True),
        ({"mpp_used": 0.3, "mpp": 0.3, "mpp_source": "user"}, 0.25, False),
    ],
)
def test_summaries_from_before_file_mpp_was_recorded(
    model: Model, slide: dict[str, Any], default_mpp: float, finished: bool
) -> None:
    old = document(model, **slide) | {"format_version": 1}
    del old["input"]
    migrated = SlideSummary.from_json(old)
    assert migrated.input is None and "file_mpp" in migrated.slide
    # Migrated once, in one place: the µm/px rule reads the recovered file_mpp ...
    assert (
        is_finished(dataclasses.replace(migrated, input=IDENTITY), IDENTITY, model, PARAMS, None, default_mpp)
        is finished
    )
    # ... but a format-1 result never says which content it was made from, so it is redone.
    assert not is_finished(migrated, IDENTITY, model, PARAMS, None, default_mpp)


def test_another_model_parameters_or_content_are_never_finished(model: Model) -> None:
    summary = stored(model, **FILE)
    assert is_done(summary, model, PARAMS, None, None)
    assert not is_done(summary, model, AnalysisParams(min_tissue_fraction=0.5), None, None)
    other_model = dataclasses.replace(summary, model=dataclasses.replace(summary.model, sha256="0" * 64))
    assert not is_done(other_model, model, PARAMS, None, None)
    assert not is_done(None, model, PARAMS, None, None)
    new_content = dataclasses.replace(IDENTITY, fingerprint="0" * 64)
    assert not is_finished(summary, new_content, model, PARAMS, None, None)
    elsewhere = dataclasses.replace(IDENTITY, path="/other/a.svs")
    assert not is_finished(summary, elsewhere, model, PARAMS, None, None)


def test_summary_round_trips_and_keeps_fields_it_does_not_know(model: Model) -> None:
    doc = document(model, **FILE) | {"future_field": {"name": "top-k mean", "k": 10}}
    summary = SlideSummary.from_json(doc)
    assert summary.extra == {"future_field": {"name": "top-k mean", "k": 10}}
    again = SlideSummary.from_json(summary.to_json())
    assert again == summary
    assert summary.to_json()["future_field"] == {"name": "top-k mean", "k": 10}
    assert summary.to_json()["score"] == 0.5 and summary.verdict.category == "intermediate"


@pytest.mark.parametrize(
    "doc", [None, [], {"status": "running"}, {"status": "ok", "format_version": 99}, {"status": "ok"}]
)
def test_unreadable_summaries_are_refused(doc: Any) -> None:
    from engine.summary import SummaryFormatError

    with pytest.raises(SummaryFormatError):
        SlideSummary.from_json(doc)


@pytest.mark.parametrize("key", ["mpp_used", "file_mpp", "mpp"])
@pytest.mark.parametrize("value", ["0,25", True, [0.25]])
def test_a_hand_edited_mpp_is_refused_when_the_summary_is_read(model: Model, key: str, value: object) -> None:
    """A summary.json edited to hold "0,25" used to be read, then crashed summary.csv."""
    from engine.summary import SummaryFormatError

    doc = document(model, **FILE)
    assert isinstance(SlideSummary.from_json(doc).slide[key], float)
    doc["slide"] = doc["slide"] | {key: value}
    with pytest.raises(SummaryFormatError, match=f"slide.{key}"):
        SlideSummary.from_json(doc)


def test_a_folder_is_searched_for_the_one_list_of_slide_files(tmp_path: Path) -> None:
    for suffix in sorted(SLIDE_SUFFIXES):
        (tmp_path / f"slide{suffix}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a slide")
    jobs = discover_slides(tmp_path)
    assert sorted(job.path.suffix for job in jobs) == sorted(SLIDE_SUFFIXES)
    assert PLAIN_IMAGE_SUFFIXES <= SLIDE_SUFFIXES  # every plain image the reader opens, e.g. .bmp
    assert all(job.name == results_name(job.path) for job in jobs)


def test_a_saved_result_is_named_as_its_input_was(tmp_path: Path) -> None:
    """A DICOM folder's name keeps its dots when its result is only found in the output folder
    (summary.csv said "S-2023.05" for a slide shown as "S-2023.05.01" when it was analysed)."""
    folder = tmp_path / "S-2023.05.01"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"DICM")
    live = job_for(folder / "a.dcm")
    dicom = InputIdentity(path=str(folder), kind="dicom", fingerprint="0" * 64)
    assert saved_job(live.name, dicom).label == live.label == "S-2023.05.01"
    folder.joinpath("a.dcm").unlink()
    folder.rmdir()  # the slide is gone; its result still says what it was
    assert saved_job(live.name, dicom).label == "S-2023.05.01"
    assert saved_job("x", dataclasses.replace(IDENTITY, path="/s/b.v2.svs")).label == "b.v2"
    assert saved_job("old_0123", None).label == "old_0123"  # a result from before inputs were recorded


def test_a_dangling_dcm_link_never_takes_over_its_folders_slide(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "0.dcm").symlink_to(tmp_path / "gone.dcm")  # sorts first, and is no file
    for name in ("1.dcm", "2.dcm"):
        (folder / name).write_bytes(b"DICM")
    (job,) = discover_slides(folder)  # one DICOM slide, so one job and one result folder
    assert job.path == folder / "1.dcm" and job.name == results_name(folder / "0.dcm")
    (job,) = unique_jobs([folder / "0.dcm", folder / "1.dcm", folder / "0.dcm"])  # as `analyse` gets them
    assert job.path == folder / "1.dcm"
    (job,) = unique_jobs([folder / "0.dcm"])  # alone, it fails as that slide
    assert job.path == folder / "0.dcm"


def test_a_long_name_in_wide_characters_still_makes_a_folder(tmp_path: Path) -> None:
    slide = tmp_path / ("\N{MICROSCOPE}" * 62 + ".svs")  # 252 bytes: a legal file name
    slide.write_bytes(b"")
    name = results_name(slide)
    assert len(name.encode()) <= 255 and name.startswith("\N{MICROSCOPE}" * 40)
    (tmp_path / "out" / name).mkdir(parents=True)  # the file system takes it
    assert results_name(tmp_path / ("x" * 100 + ".svs")).split("_")[0] == "x" * 80  # ASCII: 80 characters


def test_same_named_slides_get_folders_told_apart_by_64_bits_of_their_path(tmp_path: Path) -> None:
    a, b = results_name(tmp_path / "a" / "s.svs"), results_name(tmp_path / "b" / "s.svs")
    digest = hashlib.sha256(str(tmp_path / "a" / "s.svs").encode()).hexdigest()
    assert a == f"s_{digest[:16]}" and b.startswith("s_") and a != b


def test_an_output_folder_whose_path_loops_hides_nothing(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "a.svs").write_bytes(b"")
    jobs = discover_slides(tmp_path / "slides", exclude=tmp_path / "loop" / "out")
    assert [job.path.name for job in jobs] == ["a.svs"]


def test_a_cancel_after_the_last_tile_still_writes_nothing(model: Model, tmp_path: Path) -> None:
    slide = tmp_path / "slide.png"
    Image.fromarray(synthetic_pixels(600, 500, (100, 100, 500, 400))).save(slide)
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == total:
            cancel.set()  # every tile is analysed: only the writing is left

    job = job_for(slide)
    with pytest.raises(CancelledError):
        analyse_file(job, tmp_path, model, PARAMS, mpp=0.972, progress=progress, cancel=cancel)
    assert cancel.is_set()
    assert not (tmp_path / job.name).exists()  # no result, no lock, no empty folder


def test_an_unexpected_error_fails_its_slide_alone(model: Model, tmp_path: Path) -> None:
    """Not every failure is an EquiTriageError (a slide that exhausts memory, a bug): each slide
    gets its own outcome and the batch goes on, as on Dask. Here a library caller's infinite
    µm/px makes the opened slide raise a ValueError."""
    jobs = []
    for name in ("a.png", "b.png"):
        Image.fromarray(synthetic_pixels(600, 500, (100, 100, 500, 400))).save(tmp_path / name)
        jobs.append(job_for(tmp_path / name))
    (out := tmp_path / "out").mkdir()
    outcomes = run_batch(jobs, out, model, PARAMS, mpp=float("inf"))
    assert [o.job for o in outcomes] == jobs  # the first did not stop the second
    assert all(o.status == "failed" and "unexpected error (ValueError" in o.error for o in outcomes)
    assert (out / "summary.csv").read_text().count("unexpected error") == 2


def test_summary_csv_that_cannot_be_replaced_does_not_stop_the_batch(
    model: Model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As when a spreadsheet holds it open on Windows: every slide is still analysed, and only
    the last rebuild, which must succeed, fails the batch (exit 3 at the command line)."""
    from engine.errors import OutputError
    from engine.outputs import read_summary

    jobs = []
    for name in ("a.png", "b.png"):
        Image.fromarray(synthetic_pixels(600, 500, (100, 100, 500, 400))).save(tmp_path / name)
        jobs.append(job_for(tmp_path / name))
    (out := tmp_path / "out").mkdir()
    (out / "summary.csv").mkdir()  # os.replace cannot put a file there
    (out / "summary.csv" / "held").write_text("")
    with pytest.raises(OutputError, match=r"summary\.csv"):
        run_batch(jobs, out, model, PARAMS, mpp=0.972)
    assert all(read_summary(out / job.name) is not None for job in jobs)  # the second one too
    assert "rebuilt again after the next slide" in caplog.text
    (out / "summary.csv" / "held").unlink()
    (out / "summary.csv").rmdir()  # let go: the next run rebuilds it from both results
    run_batch(jobs, out, model, PARAMS, mpp=0.972)
    assert (out / "summary.csv").read_text().count(",cached,") == 2


def test_a_cancel_wins_over_the_slide_failing_at_that_moment(model: Model, tmp_path: Path) -> None:
    cancel = threading.Event()
    missing = job_for(tmp_path / "gone.svs")
    (out := tmp_path / "out").mkdir()
    with pytest.raises(CancelledError):  # not a "failed" outcome: the batch was interrupted
        run_batch([missing], out, model, PARAMS, on_start=lambda job: cancel.set(), cancel=cancel)


def test_a_folder_that_cannot_be_listed_says_so_rather_than_holding_no_slides(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "a.svs").write_bytes(b"")
    folder.chmod(0)
    try:
        if os.geteuid() == 0:  # root lists it anyway
            assert [job.path.name for job in discover_slides(folder)] == ["a.svs"]
        else:
            with pytest.raises(SlideNotFoundError, match="cannot be listed"):
                discover_slides(folder)
    finally:
        folder.chmod(0o755)
