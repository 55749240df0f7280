"""Checkpoint -> plain PyTorch -> one ONNX file carrying the engine's contract, checked for parity.

The exported graph needs neither e2cnn nor torch: input ``input`` (N x 3 x S x S, prepared by
``engine.preprocess.prepare``), outputs ``logits`` (N x 2) and ``features`` (N x F, the pooled,
group-invariant features before the classifier, whose training statistics the contract carries for
out-of-distribution checks). Opset 17 with the TorchScript exporter
gives a single file that onnxruntime's quantizer handles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from engine.contract import ModelContract
from engine.outputs import write_bytes_atomic
from engine.preprocess import prepare
from training.batches import make_batch
from training.config import ArchConfig
from training.features import FEATURES_NAME, training_sample, with_feature_stats
from training.field_of_view import PCAM_MPP, mask_radius_px
from training.mobilenet import MobileNetV2
from training.models import build_model, judged_checkpoint, load_weights
from training.stamp import contract_of, with_contract

log = logging.getLogger(__name__)

OPSET = 17
CLASSES = ("normal", "tumour")
PARITY_ATOL = 1e-4


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a checkpoint (eval mode) and the checkpoint's metadata."""
    ckpt = judged_checkpoint(path)
    arch = ArchConfig.from_dict(ckpt["arch"])
    model = build_model(arch)
    load_weights(model, ckpt["model"])
    model.eval()
    return model, ckpt


def to_plain(model: nn.Module) -> nn.Module:
    """Plain PyTorch network in eval mode (the equivariant net is converted, the other returned)."""
    if isinstance(model, MobileNetV2):
        return model.eval()
    from training.equivariant import EquivariantMobileNetV2
    from training.equivariant import to_plain as equivariant_to_plain

    if not isinstance(model, EquivariantMobileNetV2):
        raise TypeError(f"cannot export {type(model).__name__}")
    return equivariant_to_plain(model)


def weights_hash(model: nn.Module) -> str:
    """Short sha256 of the network's state (names, shapes, values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def make_contract(
    arch: ArchConfig, ckpt: dict[str, Any], plain: nn.Module, info: dict[str, Any]
) -> ModelContract:
    """The engine's contract for this model."""
    date = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    version = f"{arch.arch}-{arch.group_name}-w{arch.width}-{date}-{weights_hash(plain)}"
    mean = tuple(float(m) for m in ckpt["mean"])
    std = tuple(float(s) for s in ckpt["std"])
    return ModelContract(
        input_size=arch.input_size,
        mpp=PCAM_MPP,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        mask_radius=mask_radius_px(arch.input_size),
        classes=CLASSES,
        positive_class="tumour",
        model_version=version,
        info=info,
        features_name=FEATURES_NAME if isinstance(plain, MobileNetV2) else None,
    )


def model_info(checkpoint: Path, ckpt: dict[str, Any], model: nn.Module, plain: nn.Module) -> dict[str, Any]:
    """What the contract's ``info`` records about a checkpoint's network and its training
    (the FP32 export and the INT8 quantization both start from this)."""
    from training.complexity import count_macs, count_params

    arch = ArchConfig.from_dict(ckpt["arch"])
    history = ckpt.get("history", [])
    return {
        "arch": arch.arch,
        "group": arch.group_name,
        "width": arch.width,
        "strides": arch.strides_text(),
        "params_trainable": count_params(model),
        "params": count_params(plain),
        "macs": count_macs(plain, arch.input_size),
        "train_patches": ckpt.get("n_train"),
        "train_seed": ckpt.get("train_config", {}).get("seed"),  # with train_patches: which ones
        "epochs_trained": len(history),
        "epochs_planned": ckpt.get("train_config", {}).get("epochs"),
        "best_epoch": ckpt.get("epoch"),
        "selection_metrics": history[-1] if history else None,
        "checkpoint": checkpoint.name,
        "opset": OPSET,
    }


def to_onnx(plain: nn.Module, input_size: int, contract: ModelContract) -> bytes:
    """Serialised single-file ONNX model with dynamic batch and the contract in its metadata."""
    buffer = io.BytesIO()
    dummy = torch.zeros(2, 3, input_size, input_size)
    outputs = [contract.output_name]
    plain.eval()
    if contract.features_name is not None:
        if not isinstance(plain, MobileNetV2):
            raise TypeError(f"{type(plain).__name__} cannot export features")
        # Trace the two-output forward under the net's own parameter names (quantization ties
        # each Conv to its batch norm by them): shadow ``forward`` for the export only.
        plain.forward = plain.logits_and_features  # type: ignore[method-assign,assignment]
        outputs.append(contract.features_name)
    try:
        torch.onnx.export(
            plain,
            (dummy,),
            buffer,  # type: ignore[arg-type]
            input_names=[contract.input_name],
            output_names=outputs,
            dynamic_axes={contract.input_name: {0: "N"}, **{name: {0: "N"} for name in outputs}},
            opset_version=OPSET,
            dynamo=False,
        )
    finally:
        plain.__dict__.pop("forward", None)
    return with_contract(buffer.getvalue(), contract)


def onnx_logits(model_bytes: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Run an ONNX model with onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    first = session.get_outputs()[0].name  # the logits; a features output may follow
    (out,) = session.run([first], {session.get_inputs()[0].name: x})
    return np.asarray(out, dtype=np.float32)


def parity(
    model: nn.Module, plain: nn.Module, model_bytes: bytes, patches: NDArray[np.uint8]
) -> dict[str, float]:
    """Max |difference| of logits and probabilities: source vs plain torch vs onnxruntime.

    The ONNX input comes from the engine's own ``prepare`` with the contract read back from the
    file; the torch inputs from training's batch code, so this also checks that both agree.
    """
    contract = contract_of(model_bytes)
    x_engine = prepare(patches, contract)
    x_train = make_batch(patches, contract.input_size, contract.mean, contract.std)
    with torch.no_grad():
        a = model.eval()(x_train)
        b = plain.eval()(torch.from_numpy(x_engine))
    c = torch.from_numpy(onnx_logits(model_bytes, x_engine))
    pa, pc = (torch.softmax(t.double(), 1) for t in (a, c))
    return {
        "input_max_abs": float(np.abs(x_train.numpy() - x_engine).max()),
        "source_vs_plain_logits": float((a - b).abs().max()),
        "plain_vs_onnx_logits": float((b - c).abs().max()),
        "source_vs_onnx_prob": float((pa - pc).abs().max()),
    }


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    metrics_json: Path | None = None,
    data: Path | None = None,
    cache_dir: Path = Path("runs/cache"),
    n_parity: int = 64,
) -> dict[str, float]:
    """Export ``checkpoint`` to ``out`` and return the parity numbers (raises if they fail)."""
    model, ckpt = load_checkpoint(checkpoint)
    arch = ArchConfig.from_dict(ckpt["arch"])
    plain = to_plain(model)
    info = model_info(checkpoint, ckpt, model, plain)
    if metrics_json is not None:
        info["heldout"] = json.loads(Path(metrics_json).read_text())
    contract = make_contract(arch, ckpt, plain, info)
    model_bytes = to_onnx(plain, arch.input_size, contract)
    if data is not None:
        from training.data import load_patches

        patches = np.asarray(load_patches(data, cache_dir)["train"].images[:n_parity])
    else:
        patches = np.random.default_rng(0).integers(
            0, 256, size=(n_parity, arch.input_size, arch.input_size, 3), dtype=np.uint8
        )
    numbers = parity(model, plain, model_bytes, patches)
    if data is not None:
        model_bytes = with_feature_stats(model_bytes, training_sample(data, cache_dir))
    log.info("parity on %d patches: %s", len(patches), numbers)
    worst = max(numbers["source_vs_plain_logits"], numbers["plain_vs_onnx_logits"])
    if worst > PARITY_ATOL or numbers["input_max_abs"] > 0:
        raise RuntimeError(f"export parity failed: {numbers}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, model_bytes)
    log.info("wrote %s (%d bytes), version %s", out, len(model_bytes), contract.model_version)
    return numbers
