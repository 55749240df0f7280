from __future__ import annotations

import dataclasses

import pytest

from engine.contract import METADATA_KEY, ModelContract, TriagePolicy
from engine.errors import ContractError
from tests.onnx_models import make_contract


def test_round_trip_through_json() -> None:
    contract = make_contract()
    again = ModelContract.from_metadata({METADATA_KEY: contract.to_json()})
    assert again == dataclasses.replace(contract, info=dict(contract.info))
    assert again.positive_index == 1


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"input_size": 96}, "odd"),
        ({"mpp": 0.0}, "mpp"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"mask_radius": 90.0}, "mask_radius"),
        ({"classes": ("only",), "positive_class": "only"}, "two names"),
        ({"positive_class": "cancer"}, "positive_class"),
        ({"triage": TriagePolicy(high_threshold=0.3, low_threshold=0.6)}, "thresholds"),
    ],
)
def test_invalid_contracts_are_refused_with_the_reason(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment):
        make_contract(**overrides)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"format_version": 99}', "not supported"),
        ('{"format_version": 1, "mpp": 1}', "incomplete"),
    ],
)
def test_malformed_metadata_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(ContractError, match=fragment):
        ModelContract.from_metadata({METADATA_KEY: text})


def test_missing_contract_says_how_to_get_one() -> None:
    with pytest.raises(ContractError, match="training export"):
        ModelContract.from_metadata({"producer": "someone"})


@pytest.mark.parametrize(
    ("score", "category"),
    [
        (None, "no tissue"),
        (0.95, "high suspicion"),
        (0.9, "high suspicion"),
        (0.6, "intermediate"),
        (0.1, "low suspicion"),
    ],
)
def test_triage_categories_follow_thresholds(score: float | None, category: str) -> None:
    assert TriagePolicy(high_threshold=0.9, low_threshold=0.5).category(score) == category
