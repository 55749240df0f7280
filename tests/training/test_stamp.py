"""Re-stamping a finished model's contract: the contract changes, the graph never does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx

from engine.model import Model
from training.stamp import contract_of, restamp

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def test_restamp_changes_the_contract_and_nothing_else(tmp_path: Path) -> None:
    original = (ASSETS / "model.onnx").read_bytes()
    stamped = restamp(original, lambda c: dataclasses.replace(c, info={**c.info, "note": "restamped"}))
    assert contract_of(stamped).info["note"] == "restamped"
    assert "note" not in contract_of(original).info
    before, after = onnx.load_from_string(original), onnx.load_from_string(stamped)
    assert before.graph.SerializeToString() == after.graph.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(stamped)
    model = Model.load(path, threads=1)  # the engine reads the new contract
    assert model.contract.info["note"] == "restamped"
    assert model.contract.triage == contract_of(original).triage
