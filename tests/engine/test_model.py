from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from engine.errors import ContractError, ModelError, ModelNotFoundError, Remedy
from engine.model import MODEL_ENV, Model, default_model_path
from engine.preprocess import prepare
from tests.onnx_models import colour_graph, make_contract, write_model


def reference_probs(patches: np.ndarray, model: Model) -> np.ndarray:
    """What the colour graph computes, in numpy: softmax of W^T mean(x) + b."""
    x = prepare(patches, model.contract).mean(axis=(2, 3)).astype(np.float64)
    w = np.array([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]) * 2.0
    logits = x @ w + np.array([0.0, -1.0])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs: np.ndarray = e[:, 1] / e.sum(axis=1)
    return probs


def test_predict_matches_the_graph(model: Model) -> None:
    rng = np.random.default_rng(3)
    patches = rng.integers(0, 256, size=(70, 96, 96, 3), dtype=np.uint8)
    probs = model.predict(patches, batch_size=16)
    assert probs.shape == (70,) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, reference_probs(patches, model), atol=1e-5)
    assert len(set(np.round(probs, 3))) > 10


def test_contract_and_identity_are_exposed(model: Model, model_path: Path) -> None:
    assert model.contract.input_size == 95
    assert model.version == "test-colour-1"
    assert model.path == model_path
    assert len(model.sha256) == 64


def test_bad_patch_arrays_are_refused(model: Model) -> None:
    with pytest.raises(ValueError, match="uint8"):
        model.predict(np.zeros((2, 95, 95, 3), dtype=np.float32))


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no model file there; check the model path") as info:
        Model.load(tmp_path / "nope.onnx")
    assert info.value.remedy is Remedy.CHECK_MODEL_PATH


def test_no_shipped_model_asks_for_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setattr("engine.model.assets_dirs", lambda: [tmp_path])
    with pytest.raises(ModelNotFoundError, match="no model is shipped") as info:
        default_model_path()
    assert info.value.remedy is Remedy.CHOOSE_MODEL
    assert "--" not in str(info.value)  # the library's wording names no front end's flags


def test_corrupt_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        Model.load(bad)


def test_model_without_contract_is_refused(tmp_path: Path) -> None:
    path = write_model(tmp_path / "plain.onnx", metadata="")
    with pytest.raises(ContractError, match="no EquiTriage contract"):
        Model.load(path)


def test_contract_that_does_not_match_the_graph(tmp_path: Path) -> None:
    model = colour_graph(input_px=63)
    entry = model.metadata_props.add()
    entry.key, entry.value = "equitriage.contract", make_contract().to_json()
    path = tmp_path / "mismatch.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ContractError, match="input shape"):
        Model.load(path)


def test_env_var_chooses_the_default_model(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODEL_ENV, str(model_path))
    assert default_model_path() == model_path
    assert Model.load(None, threads=1).sha256 == Model.load(model_path, threads=1).sha256


def test_int8_qdq_model_runs(tmp_path: Path, model: Model) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(32, 95, 95, 3), dtype=np.uint8)

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped (Any)
        def __init__(self) -> None:
            self.items = iter(
                [{"input": prepare(patches[i : i + 8], model.contract)} for i in range(0, 32, 8)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    out = tmp_path / "int8.onnx"
    quantize_static(
        str(model.path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    int8 = Model.load(out, threads=1)
    assert int8.contract == model.contract
    np.testing.assert_allclose(int8.predict(patches), model.predict(patches), atol=0.05)


def test_shipped_model_is_checked_against_its_recorded_sha256(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "model.onnx"
    shipped.write_bytes(model_path.read_bytes())
    record = tmp_path / "model.onnx.sha256"
    record.write_text(Model.load(model_path, threads=1).sha256 + "\n")
    monkeypatch.setenv(MODEL_ENV, str(shipped))
    assert Model.load(None, threads=1).version == "test-colour-1"
    write_model(shipped, make_contract(model_version="swapped"))  # tampered: another valid model
    with pytest.raises(ModelError, match="sha256 mismatch"):
        Model.load(None, threads=1)
    # An explicit --model is the user's choice and is not checked against the record.
    assert Model.load(shipped, threads=1).version == "swapped"
    record.unlink()
    monkeypatch.setattr("sys.frozen", True, raising=False)
    with pytest.raises(ModelError, match="checksum record is missing"):
        Model.load(None, threads=1)
