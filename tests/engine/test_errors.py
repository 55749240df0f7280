"""Errors keep what went wrong apart from what to do; each front end words the remedy its own way."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from engine.batch import SlideJob, SlideOutcome
from engine.commands import BATCH_REMEDIES, CLI_REMEDIES, remedies_for
from engine.errors import (
    NEUTRAL_REMEDIES,
    EquiTriageError,
    MissingMppError,
    ModelNotFoundError,
    OutputError,
    Remedy,
    SlideTooSmallError,
    phrase,
)


def test_every_remedy_has_a_neutral_wording_without_flags() -> None:
    assert set(NEUTRAL_REMEDIES) == set(Remedy)
    for text in NEUTRAL_REMEDIES.values():
        assert "--" not in text and "\n" not in text


def test_str_is_the_problem_and_the_neutral_remedy() -> None:
    exc = MissingMppError("x: the slide does not record its µm/px")
    assert exc.remedy is Remedy.SET_MPP
    assert str(exc) == f"x: the slide does not record its µm/px; {NEUTRAL_REMEDIES[Remedy.SET_MPP]}"
    assert exc.message({Remedy.SET_MPP: "do this"}) == "x: the slide does not record its µm/px; do this"
    assert str(EquiTriageError("plain")) == "plain"  # no remedy, no advice
    assert phrase("p", None, CLI_REMEDIES) == "p"


def test_a_raise_site_can_choose_another_remedy_and_it_survives_pickling() -> None:
    exc = ModelNotFoundError("no model is shipped with this installation", Remedy.CHOOSE_MODEL)
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is ModelNotFoundError and again.remedy is Remedy.CHOOSE_MODEL
    assert str(again) == str(exc)


@pytest.mark.parametrize(
    ("exc", "command", "flag"),
    [
        (MissingMppError("x: the slide does not record its µm/px"), "analyse", "pass --mpp"),
        (MissingMppError("x: the slide does not record its µm/px"), "batch", "pass --default-mpp"),
        (SlideTooSmallError("x: smaller than one model patch"), "analyse", "--mpp"),
        (ModelNotFoundError("no model is shipped", Remedy.CHOOSE_MODEL), "analyse", "pass --model PATH"),
        (ModelNotFoundError("m.onnx: no model file there"), "model", "check the --model path"),
        (OutputError("cannot write to o"), "batch", "(--out)"),
    ],
)
def test_the_cli_names_its_flags(exc: EquiTriageError, command: str, flag: str) -> None:
    line = exc.message(remedies_for(command))
    assert line.startswith(exc.problem + "; ") and flag in line and "\n" not in line


def test_batch_wording_differs_only_for_the_missing_mpp() -> None:
    assert {r for r in Remedy if BATCH_REMEDIES.get(r) != CLI_REMEDIES.get(r)} == {Remedy.SET_MPP}


def test_a_failed_outcome_keeps_problem_and_remedy() -> None:
    job = SlideJob(Path("x.tiff"), "x")
    outcome = SlideOutcome.failed(job, MissingMppError("x: the slide does not record its µm/px"))
    assert outcome.error == "x: the slide does not record its µm/px" and outcome.remedy is Remedy.SET_MPP
    assert "pass --mpp" in outcome.message(CLI_REMEDIES)
    assert outcome.message() == str(MissingMppError("x: the slide does not record its µm/px"))
    assert SlideOutcome(job, "ok").message(CLI_REMEDIES) == ""
