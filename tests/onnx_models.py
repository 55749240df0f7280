"""Small ONNX classifiers built with onnx.helper for tests (no torch, no trained weights).

``colour_model`` scores a patch by its mean colour inside the model's input: darker, bluer
patches (dense nuclei) get a higher "tumour" logit. It is a real ONNX graph that onnxruntime runs,
so the engine is exercised end to end; it is not a tumour detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.contract import METADATA_KEY, ModelContract, TriagePolicy

INPUT_PX = 95


def make_contract(**overrides: object) -> ModelContract:
    fields: dict[str, object] = {
        "input_size": INPUT_PX,
        "mpp": 0.972,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "mask_radius": 47.5,
        "classes": ("normal", "tumour"),
        "positive_class": "tumour",
        "model_version": "test-colour-1",
        "triage": TriagePolicy(tile_threshold=0.5, top_k=5, high_threshold=0.8, low_threshold=0.4),
        "info": {"kind": "test model built with onnx.helper"},
    }
    fields.update(overrides)
    return ModelContract(**fields)  # type: ignore[arg-type]


def colour_graph(input_px: int = INPUT_PX, opset: int = 17) -> onnx.ModelProto:
    """GlobalAveragePool -> Flatten -> Gemm: logits from the mean normalised colour."""
    weights = np.array([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=np.float32) * 2.0
    bias = np.array([0.0, -1.0], dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, input_px, input_px])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def write_model(path: Path, contract: ModelContract | None = None, metadata: str | None = None) -> Path:
    """Write the colour model with ``contract`` (or raw ``metadata`` text) in its metadata."""
    model = colour_graph(contract.input_size if contract else INPUT_PX)
    text = metadata if metadata is not None else (contract or make_contract()).to_json()
    if text:
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = text
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
