"""Resuming a batch: a stored analysis counts as finished only if this run would use the same µm/px."""

from __future__ import annotations

from typing import Any

import pytest

from engine.batch import is_finished
from engine.model import Model
from engine.pipeline import AnalysisParams

PARAMS = AnalysisParams()


def stored(model: Model, **slide: Any) -> dict[str, Any]:
    return {
        "model": {"sha256": model.sha256},
        "parameters": PARAMS.as_dict(model.contract.input_size),
        "slide": slide,
    }


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
        (OVERRIDE, None, None, True),
    ],
)
def test_mpp_decides_whether_a_slide_is_redone(
    model: Model, slide: dict[str, Any], mpp: float | None, default_mpp: float | None, finished: bool
) -> None:
    assert is_finished(stored(model, **slide), model, PARAMS, mpp, default_mpp) is finished


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
    assert is_finished(stored(model, **slide), model, PARAMS, None, default_mpp) is finished


def test_another_model_or_parameters_are_never_finished(model: Model) -> None:
    summary = stored(model, **FILE)
    assert is_finished(summary, model, PARAMS, None, None)
    assert not is_finished(summary, model, AnalysisParams(min_tissue_fraction=0.5), None, None)
    summary["model"]["sha256"] = "0" * 64
    assert not is_finished(summary, model, PARAMS, None, None)
    assert not is_finished(None, model, PARAMS, None, None)
