"""Checkpoint -> data-free-quantized INT8 ONNX model (onnxruntime QDQ) carrying the engine's contract.

The pipeline follows Nagel et al. 2019 on the plain network, before ONNX export, because the
batch-norm statistics it needs are gone once BN is folded into an ONNX graph:

1. load the checkpoint, convert it to plain PyTorch (:func:`training.export.to_plain`);
2. fold BN, cross-layer equalization, high-bias absorption (:mod:`training.dfq`);
3. export the FP32 folded net with :func:`training.export.to_onnx`;
4. activation ranges either data-free (each tensor's range from the BN Gaussian model,
   ``mean +- k std``, clipped at 0 after a ReLU: the pure maths of :mod:`training.ranges`) or
   calibrated (min/max on at most 512 unlabelled training patches), handed to
   ``onnxruntime.quantization.quantize_static`` as a calibration cache;
5. optional analytic bias correction against the weights onnxruntime actually quantized, then
   quantize again.

Defaults were chosen by measurement on this CPU: uint8 activations, int8 per-tensor weights with
``reduce_range`` (7-bit weights, no u8s8 saturation, so 90-degree invariance stays bit-exact).
Heavy imports (torch, onnx, onnxruntime.quantization) happen inside the functions. The command
line is ``python -m training quantize`` (:mod:`training.cli`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from engine.outputs import write_bytes_atomic
from training.ranges import UNIT_WEIGHT_SUFFIX, data_free_ranges, input_range, unit_of

if TYPE_CHECKING:
    import onnx

    from engine.contract import ModelContract
    from training.dfq import PreActivation
    from training.mobilenet import MobileNetV2

log = logging.getLogger(__name__)

MAX_CALIBRATION = 512
CHECK_PATCHES = 64  # training patches the INT8-vs-FP32 agreement is measured on
QUANTIZED_OPS = ("Conv", "Relu", "Add")


@dataclass(frozen=True)
class QuantConfig:
    """How a model is quantized (recorded in the contract's ``info["quantization"]``)."""

    cle: bool = True
    hba: bool = True
    bias_correction: bool = False
    per_channel: bool = False
    calibrate: int = 0  # 0: data-free ranges from BN statistics; N: min/max on N training patches
    range_sigmas: float = 6.0  # data-free range: mean +- range_sigmas * std of the BN model
    hba_sigmas: float = 3.0
    reduce_range: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.calibrate <= MAX_CALIBRATION:
            raise ValueError(
                f"calibrate takes 0 (data-free) to {MAX_CALIBRATION} patches, got {self.calibrate}"
            )
        if self.range_sigmas <= 0 or self.hba_sigmas <= 0:
            raise ValueError("range_sigmas and hba_sigmas must be positive")

    def describe(self) -> dict[str, Any]:
        """JSON-friendly record for the model's contract."""
        return {
            "method": "data-free quantization (Nagel et al. 2019), onnxruntime QDQ",
            "bn_folded": True,
            "cle": self.cle,
            "hba": self.hba,
            "hba_sigmas": self.hba_sigmas if self.hba else None,
            "bias_correction": self.bias_correction,
            "ranges": f"calibrated {self.calibrate}" if self.calibrate else "data-free",
            "range_sigmas": None if self.calibrate else self.range_sigmas,
            "weights": "per-channel" if self.per_channel else "per-tensor",
            "weight_type": "int8 symmetric" + (" (reduce_range: 7-bit)" if self.reduce_range else ""),
            "activation_type": "uint8 asymmetric",
            "quantized_ops": list(QUANTIZED_OPS),
        }


# ----------------------------------------------------------------------------- QDQ graphs


def blur_nodes(graph: onnx.GraphProto) -> list[str]:
    """The anti-aliasing blurs: Conv nodes with fixed weights (not a unit's ``.0.weight``). They stay
    in float between a DequantizeLinear and a QuantizeLinear; their cost is a few MACs per pixel."""
    return [n.name for n in graph.node if n.op_type == "Conv" and unit_of(n.input[1]) is None]


def dequantized_weights(proto: onnx.ModelProto) -> dict[str, NDArray[np.float32]]:
    """Weights as the QDQ model computes with them: ``(q - zero_point) * scale`` of every
    DequantizeLinear fed by an initializer, keyed by the FP32 weight's name."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    out: dict[str, NDArray[np.float32]] = {}
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = inits[node.input[0]].astype(np.float64)
        scale = inits[node.input[1]].astype(np.float64)
        zp = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(scale)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        name = node.input[0].removesuffix("_quantized")
        out[name] = ((q - zp) * scale).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- model building


@dataclass
class Prepared:
    """The DFQ-processed plain net, its BN models and what DFQ did."""

    folded: MobileNetV2
    stats: dict[str, PreActivation]
    report: dict[str, Any]


def apply_dfq(plain: MobileNetV2, cfg: QuantConfig) -> Prepared:
    """Fold BN, then (as configured) equalize and absorb high biases; ``plain`` is not modified."""
    from training import dfq

    folded, stats = dfq.fold_batchnorm(plain)
    report: dict[str, Any] = {"range_ratio_before": max(dfq.weight_range_ratio(folded).values())}
    if cfg.cle:
        eq = dfq.equalize(folded, stats)
        report["cle"] = dataclasses.asdict(eq)
    if cfg.hba:
        absorbed = dfq.absorb_high_bias(folded, stats, cfg.hba_sigmas)
        report["hba_pairs"] = len(absorbed)
        report["hba_max"] = max(absorbed.values(), default=0.0)
    report["range_ratio_after"] = max(dfq.weight_range_ratio(folded).values())
    log.info("DFQ: %s", report)
    return Prepared(folded, stats, report)


class PatchReader:
    """onnxruntime calibration reader over prepared input batches."""

    def __init__(self, x: NDArray[np.float32], input_name: str, batch: int = 64) -> None:
        self._batches = [x[i : i + batch] for i in range(0, len(x), batch)]
        self._name = input_name
        self._next = 0

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {self._name: self._batches[self._next - 1]}


def quantize_onnx(
    fp32: bytes,
    cfg: QuantConfig,
    ranges: dict[str, tuple[float, float]] | None,
    calibration: NDArray[np.float32] | None,
    input_name: str,
) -> bytes:
    """onnxruntime QDQ quantization of ``fp32`` with given ranges or by calibrating on inputs."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    with tempfile.TemporaryDirectory(prefix="equitriage-quant-") as tmp:
        src, dst, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "ranges.json"
        src.write_bytes(fp32)
        reader = None
        if ranges is not None:
            data = {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()}
            save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
        elif calibration is not None:
            reader = PatchReader(calibration, input_name)
        else:
            raise ValueError("pass ranges (data-free) or calibration inputs")
        quantize_static(
            str(src),
            str(dst),
            reader,
            nodes_to_exclude=blur_nodes(onnx.load_from_string(fp32).graph),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache) if ranges is not None else None,
        )
        return dst.read_bytes()


def quantize_plain(
    plain: MobileNetV2,
    contract: ModelContract,
    cfg: QuantConfig,
    calibration: NDArray[np.float32] | None = None,
) -> tuple[bytes, bytes, dict[str, Any]]:
    """(FP32 folded ONNX, INT8 QDQ ONNX, report) for a plain net and its FP32 contract.

    ``calibration`` (prepared inputs) is required when ``cfg.calibrate`` > 0 and ignored otherwise.
    The INT8 contract is ``contract`` with ``-int8`` appended to the version and the quantization
    recorded in ``info["quantization"]``.
    """
    import onnx
    import torch

    from training import dfq
    from training.export import to_onnx
    from training.stamp import with_contract

    prepared = apply_dfq(plain, cfg)
    size = contract.input_size
    fp32 = to_onnx(prepared.folded, size, contract)
    relu_units = {n for n in dfq.unit_names(prepared.folded) if dfq.has_relu(prepared.folded, n)}

    def ranges_of(model_bytes: bytes) -> dict[str, tuple[float, float]] | None:
        if cfg.calibrate:
            return None
        graph = onnx.load_from_string(model_bytes).graph
        return data_free_ranges(
            graph, prepared.stats, relu_units, input_range(contract.mean, contract.std), cfg.range_sigmas
        )

    if cfg.calibrate and (calibration is None or len(calibration) == 0):
        raise ValueError("calibrate > 0 needs calibration patches")
    calib = calibration[: cfg.calibrate] if calibration is not None and cfg.calibrate else None
    int8 = quantize_onnx(fp32, cfg, ranges_of(fp32), calib, contract.input_name)
    report: dict[str, Any] = {"dfq": prepared.report}
    if cfg.bias_correction:
        weights = dequantized_weights(onnx.load_from_string(int8))
        quantized = {
            name: torch.from_numpy(weights[name + UNIT_WEIGHT_SUFFIX])
            for name in dfq.unit_names(prepared.folded)
            if name + UNIT_WEIGHT_SUFFIX in weights
        }
        corrected = dfq.correct_bias(prepared.folded, prepared.stats, quantized)
        report["bias_correction_max"] = max(corrected.values(), default=0.0)
        fp32_corrected = to_onnx(prepared.folded, size, contract)
        int8 = quantize_onnx(fp32_corrected, cfg, ranges_of(fp32_corrected), calib, contract.input_name)
    info = dict(contract.info)
    info["quantization"] = {**cfg.describe(), **report}
    int8_contract = dataclasses.replace(contract, model_version=f"{contract.model_version}-int8", info=info)
    return fp32, with_contract(int8, int8_contract), report


# ----------------------------------------------------------------------------- checkpoint I/O


def calibration_inputs(
    data: Path, cache_dir: Path, contract: ModelContract, n: int, seed: int = 0
) -> NDArray[np.float32]:
    """``n`` seeded random unlabelled training patches, prepared as the engine does."""
    from engine.preprocess import prepare
    from training.data import load_patches

    train = load_patches(data, cache_dir)["train"]
    index = np.sort(np.random.default_rng(seed).choice(len(train), size=n, replace=False))
    return prepare(np.asarray(train.images[index]), contract)


def split_calibration(
    drawn: NDArray[np.float32], n_calibrate: int
) -> tuple[NDArray[np.float32] | None, NDArray[np.float32]]:
    """(calibration inputs or None when data-free, check inputs): disjoint slices of ``drawn``.

    The INT8-vs-FP32 check runs on patches the ranges were not calibrated on, so that a
    calibrated model's agreement is not measured on its own calibration set.
    """
    if not 0 <= n_calibrate < len(drawn):
        raise ValueError(f"cannot keep check inputs: {n_calibrate} to calibrate of {len(drawn)} drawn")
    return (drawn[:n_calibrate] if n_calibrate else None), drawn[n_calibrate:]


def agreement(fp32: bytes, int8: bytes, x: NDArray[np.float32]) -> dict[str, float]:
    """Max and mean |p_fp32 - p_int8| of the positive class, and argmax agreement, on inputs ``x``."""
    from training.export import onnx_logits

    def prob(b: bytes) -> NDArray[np.float64]:
        z = onnx_logits(b, x).astype(np.float64)
        e: NDArray[np.float64] = np.exp(z - z.max(axis=1, keepdims=True))
        out: NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
        return out

    p, q = prob(fp32), prob(int8)
    d = np.abs(p - q)[:, -1]
    return {
        "max_abs_dp": float(d.max()),
        "mean_abs_dp": float(d.mean()),
        "argmax_agree": float((p.argmax(1) == q.argmax(1)).mean()),
    }


def quantize_checkpoint(
    checkpoint: Path,
    out: Path,
    cfg: QuantConfig,
    data: Path | None = None,
    cache_dir: Path = Path("runs/cache"),
    fp32_out: Path | None = None,
) -> dict[str, Any]:
    """Quantize a training checkpoint to ``out`` (and its DFQ'd FP32 twin to ``fp32_out``)."""
    from training.config import ArchConfig
    from training.export import load_checkpoint, make_contract, model_info, to_plain
    from training.mobilenet import MobileNetV2

    model, ckpt = load_checkpoint(checkpoint)
    arch = ArchConfig.from_dict(ckpt["arch"])
    plain = to_plain(model)
    if not isinstance(plain, MobileNetV2):
        raise TypeError(f"{checkpoint}: expected a MobileNetV2, got {type(plain).__name__}")
    info = model_info(checkpoint, ckpt, model, plain)
    contract = make_contract(arch, ckpt, plain, info)
    if data is not None:
        drawn = calibration_inputs(data, cache_dir, contract, cfg.calibrate + CHECK_PATCHES, cfg.seed)
        calib, check = split_calibration(drawn, cfg.calibrate)
        checked_on = f"{len(check)} training patches not used for calibration"
    elif cfg.calibrate:
        raise ValueError("--calibrate needs --data (the PCam training patches)")
    else:
        calib = None
        size = arch.input_size
        check = np.random.default_rng(cfg.seed).normal(size=(16, 3, size, size)).astype(np.float32)
        checked_on = f"{len(check)} random inputs"
    fp32, int8, report = quantize_plain(plain, contract, cfg, calib)
    report["agreement"] = agreement(fp32, int8, check)
    report["agreement_inputs"] = checked_on
    log.info("INT8 vs FP32 twin on %s: %s", checked_on, report["agreement"])
    if data is not None and contract.features_name is not None:
        from training.features import training_sample, with_feature_stats

        sample = training_sample(data, cache_dir)
        int8, fp32 = with_feature_stats(int8, sample), with_feature_stats(fp32, sample)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, int8)
    log.info("wrote %s (%d bytes): %s", out, len(int8), json.dumps(cfg.describe()))
    if fp32_out is not None:
        fp32_out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(fp32_out, fp32)
        log.info("wrote FP32 twin %s (%d bytes)", fp32_out, len(fp32))
    return report
