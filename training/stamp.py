"""Reading and writing the contract of an ONNX model file (onnx only: no torch).

:func:`with_contract` puts a contract into a model; :func:`contract_of` reads it back;
:func:`restamp` changes it on a finished model (held-out numbers, feature statistics, slide
policy, out-of-distribution limits) and refuses if the graph or weights would change.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.contract import METADATA_KEY, ModelContract


def with_contract(model_bytes: bytes, contract: ModelContract) -> bytes:
    """The model with ``contract`` as its one EquiTriage contract entry, checked by onnx."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = contract.to_json()
    proto.producer_name = "equitriage-training"
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def contract_of(model_bytes: bytes) -> ModelContract:
    """The contract stored in a model (raises ContractError if there is none or it is invalid)."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    return ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})


def restamp(model_bytes: bytes, change: Callable[[ModelContract], ModelContract]) -> bytes:
    """``model_bytes`` with its contract replaced by ``change(contract)``; the graph and its
    weights stay byte-identical (checked), only the metadata differs."""
    import onnx

    stamped = with_contract(model_bytes, change(contract_of(model_bytes)))
    before, after = onnx.load_from_string(model_bytes).graph, onnx.load_from_string(stamped).graph
    if before.SerializeToString() != after.SerializeToString():
        raise ValueError("re-stamping the contract would change the model graph")
    return stamped
