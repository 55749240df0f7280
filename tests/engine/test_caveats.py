"""A result's caveats: each one is worded once, in the full list, the table flags and the caption."""

from __future__ import annotations

from typing import Any

from engine.caveats import caption, caveats, short_flags
from engine.contract import DEFAULT_CALIBRATION, TriagePolicy
from engine.summary import Thresholds
from tests.summaries import summary_of

CALIBRATED = "region_logistic fitted on the selection mosaic slides by benchmarks/slide_triage.py --calibrate"


def _thresholds(calibration: str) -> dict[str, Any]:
    policy = TriagePolicy(calibration=calibration)
    return {**Thresholds.from_policy(policy).__dict__, "weights": list(policy.weights)}


def test_a_calibrated_result_from_the_file_mpp_has_no_caveat() -> None:
    summary = summary_of(
        score=0.4, category="intermediate", thresholds=_thresholds(CALIBRATED), slide={"mpp_origin": "file"}
    )
    assert caveats(summary) == [] and short_flags(summary) == ""
    assert caption(summary) == "score 0.400 · intermediate · model v1"


def test_the_default_policy_is_a_caveat_of_the_result() -> None:
    assert not TriagePolicy().calibrated and TriagePolicy(calibration=CALIBRATED).calibrated
    summary = summary_of(score=0.4, category="intermediate", thresholds=_thresholds(DEFAULT_CALIBRATION))
    (line,) = caveats(summary)
    assert "v1" in line and "rough guide" in line
    assert short_flags(summary) == "THRESHOLDS NOT CALIBRATED"
    assert caption(summary).endswith("· THRESHOLDS NOT CALIBRATED")


def test_caveats_come_most_serious_first() -> None:
    summary = summary_of(
        score=0.9,
        category="high suspicion",
        thresholds=_thresholds(DEFAULT_CALIBRATION),
        slide={"mpp_origin": "default", "mpp_used": 0.25},
        out_of_distribution=True,
        ood={"reasons": ["colour"]},
    )
    lines = caveats(summary)
    assert len(lines) == 3 and "ASSUMED" in lines[1] and "rough guide" in lines[2]
    assert short_flags(summary) == "OUT OF DISTRIBUTION; µm/px ASSUMED (0.25); THRESHOLDS NOT CALIBRATED"


def test_results_written_before_policies_were_recorded_have_no_policy_caveat() -> None:
    assert short_flags(summary_of(score=0.4, category="intermediate", thresholds={})) == ""
