"""The shipped model in assets/: what the model card promises, checked on the real file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine.model import Model, default_model_path
from engine.preprocess import fit_patches

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def shipped() -> Model:
    return Model.load(threads=1)


def test_default_load_is_the_shipped_int8_equivariant_model(shipped: Model) -> None:
    assert default_model_path() == ASSETS / "model.onnx"
    info = shipped.contract.info
    assert info["arch"] == "equivariant" and info["group"] in ("C4", "C8")
    assert shipped.contract.features_name is not None and shipped.contract.feature_stats is not None
    assert info["quantization"]["weights"] == "per-tensor" and info["quantization"]["ranges"] == "data-free"
    ops = {n.op_type for n in onnx.load(str(ASSETS / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert (ASSETS / "model.onnx").stat().st_size < 3_000_000


def test_model_card_names_the_shipped_version(shipped: Model) -> None:
    card = (ASSETS / "MODEL_CARD.md").read_text(encoding="utf-8")
    versions = set(re.findall(r"\*\*Version\*\* `([^`]+)`", card))
    assert versions == {shipped.version}


def test_shipped_contract_carries_the_calibrated_slide_policy(shipped: Model) -> None:
    """The contract has its own slide-level policy (not the fallback) and the card reports it."""
    t = shipped.contract.triage
    assert t.score_method == "region_logistic"
    assert "slide_triage.py --calibrate" in t.calibration and "default policy" not in t.calibration
    assert 0 < t.low_threshold < t.high_threshold < 1
    card = (ASSETS / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"**{t.low_threshold}**" in card and f"**{t.high_threshold}**" in card


def test_shipped_model_on_real_patches(shipped: Model, shared_data: Path) -> None:
    """Exact 90-degree invariance and better than chance on 300 real PCam `valid` patches."""
    from training.data import read_zip
    from training.metrics import auc

    valid = read_zip(shared_data / "pcam" / "pcam_train_valid.zip", max_per_split=300)["valid"]
    patches = fit_patches(np.asarray(valid.images), shipped.contract.input_size)
    prob = shipped.predict(patches)
    for k in (1, 2, 3):
        rotated = np.ascontiguousarray(np.rot90(patches, k, axes=(1, 2)))
        assert np.abs(shipped.predict(rotated) - prob).max() <= 1e-3
    assert auc(valid.labels, prob.astype(np.float64)) > 0.75
