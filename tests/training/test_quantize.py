"""INT8 QDQ export: contract kept, engine loads it, agreement with the FP32 twin, 90-degree
invariance, data-free vs naive ranges, per-channel and calibrated options, the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from numpy.typing import NDArray

from engine.contract import METADATA_KEY, ModelContract
from engine.model import Model
from engine.preprocess import prepare
from tests.onnx_models import make_contract
from tests.training.dfq_models import random_input, tiny_plain
from training import dfq
from training.cli import add_quantize_parser
from training.commands import cmd_quantize
from training.export import onnx_logits
from training.mobilenet import MobileNetV2
from training.quantize import (
    QuantConfig,
    agreement,
    apply_dfq,
    dequantized_weights,
    quantize_onnx,
    quantize_plain,
    split_calibration,
)
from training.ranges import data_free_ranges, input_range

torch.set_num_threads(1)

# PCam statistics, so that the exact data-free input range is realistic
CONTRACT = make_contract(mean=(0.70, 0.54, 0.69), std=(0.24, 0.28, 0.22), model_version="tiny-1")


@pytest.fixture(scope="module")
def equivariant() -> MobileNetV2:
    return tiny_plain("equivariant", group_order=4)


@pytest.fixture(scope="module")
def x() -> NDArray[np.float32]:
    return random_input(32, torch.Generator().manual_seed(1)).numpy()


@pytest.fixture(scope="module")
def default_int8(equivariant: MobileNetV2) -> tuple[bytes, bytes]:
    fp32, int8, _ = quantize_plain(equivariant, CONTRACT, QuantConfig())
    return fp32, int8


def _contract(model_bytes: bytes) -> ModelContract:
    proto = onnx.load_from_string(model_bytes)
    return ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})


def _ops(model_bytes: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(model_bytes).graph.node]


def test_int8_model_is_qdq_and_keeps_the_contract(default_int8: tuple[bytes, bytes]) -> None:
    fp32, int8 = default_int8
    ops = _ops(int8)
    assert ops.count("QuantizeLinear") >= 10 and "DequantizeLinear" in ops
    assert "QuantizeLinear" not in _ops(fp32) and "BatchNormalization" not in _ops(fp32)
    c = _contract(int8)
    assert c.model_version == "tiny-1-int8" and _contract(fp32).model_version == "tiny-1"
    assert (c.input_size, c.mean, c.std, c.classes) == (
        CONTRACT.input_size,
        CONTRACT.mean,
        CONTRACT.std,
        CONTRACT.classes,
    )
    q = c.info["quantization"]
    assert (q["cle"], q["hba"], q["bias_correction"]) == (True, True, False)
    assert q["ranges"] == "data-free" and q["weights"] == "per-tensor"
    assert q["activation_type"].startswith("uint8") and q["weight_type"].startswith("int8")
    assert q["dfq"]["cle"]["converged"] and q["dfq"]["hba_pairs"] > 0
    assert len(int8) < 0.5 * len(fp32)


def test_engine_loads_int8_and_agrees_with_fp32(default_int8: tuple[bytes, bytes], tmp_path: Path) -> None:
    fp32, int8 = default_int8
    paths = []
    for name, data in (("fp32.onnx", fp32), ("int8.onnx", int8)):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    patches = np.random.default_rng(0).integers(0, 256, size=(24, 96, 96, 3), dtype=np.uint8)
    p_fp32, p_int8 = (Model.load(p, threads=1).predict(patches) for p in paths)
    assert p_int8.dtype == np.float32 and np.all((p_int8 >= 0) & (p_int8 <= 1))
    error = np.abs(p_int8 - p_fp32)
    assert float(error.max()) < 0.05
    # An untrained net scores noise patches alike (spread 0.012), so "< 0.05" alone says little:
    # INT8's error must also stay below the differences FP32 sees between the patches
    # (measured: max error 0.008, mean 0.005).
    spread = float(p_fp32.max() - p_fp32.min())
    assert spread > 0 and float(error.max()) < spread and float(error.mean()) < 0.5 * spread


def test_int8_keeps_rot90_invariance(default_int8: tuple[bytes, bytes], x: NDArray[np.float32]) -> None:
    _, int8 = default_int8
    base = onnx_logits(int8, x)
    for k in (1, 2, 3):
        rotated = onnx_logits(int8, np.ascontiguousarray(np.rot90(x, k, axes=(2, 3))))
        assert float(np.abs(rotated - base).max()) < 1e-5 * float(np.abs(base).max()) + 1e-6


def test_dfq_improves_int8_agreement(equivariant: MobileNetV2, x: NDArray[np.float32]) -> None:
    with_dfq = agreement(*quantize_plain(equivariant, CONTRACT, QuantConfig())[:2], x)
    without = agreement(*quantize_plain(equivariant, CONTRACT, QuantConfig(cle=False, hba=False))[:2], x)
    assert with_dfq["mean_abs_dp"] < 0.5 * without["mean_abs_dp"]
    assert with_dfq["argmax_agree"] >= 0.9


def test_data_free_ranges_beat_naive_ranges(equivariant: MobileNetV2, x: NDArray[np.float32]) -> None:
    """Per-tensor ranges from the BN statistics vs one range (the widest of them) for every tensor."""
    cfg = QuantConfig()
    prepared = apply_dfq(equivariant, cfg)
    from training.export import to_onnx

    fp32 = to_onnx(prepared.folded, CONTRACT.input_size, CONTRACT)
    relu_units = {n for n in dfq.unit_names(prepared.folded) if dfq.has_relu(prepared.folded, n)}
    ranges = data_free_ranges(
        onnx.load_from_string(fp32).graph,
        prepared.stats,
        relu_units,
        input_range(CONTRACT.mean, CONTRACT.std),
        cfg.range_sigmas,
    )
    graph = onnx.load_from_string(fp32).graph
    assert all(n.output[0] in ranges for n in graph.node if n.op_type in ("Conv", "Relu", "Add"))
    assert all(lo <= 0 <= hi and hi > lo for lo, hi in ranges.values())
    widest = max(max(-lo, hi) for lo, hi in ranges.values())
    naive = {k: (-widest, widest) for k in ranges}
    good = agreement(fp32, quantize_onnx(fp32, cfg, ranges, None, "input"), x)
    bad = agreement(fp32, quantize_onnx(fp32, cfg, naive, None, "input"), x)
    assert good["mean_abs_dp"] < 0.5 * bad["mean_abs_dp"]


def test_input_range_is_exact() -> None:
    lo, hi = input_range((0.5, 0.25, 0.75), (0.25, 0.5, 0.25))
    assert (lo, hi) == pytest.approx((-3.0, 2.0))


def test_per_channel_weights(equivariant: MobileNetV2, x: NDArray[np.float32]) -> None:
    fp32, int8, _ = quantize_plain(equivariant, CONTRACT, QuantConfig(per_channel=True))
    proto = onnx.load_from_string(int8)
    inits = {t.name: t for t in proto.graph.initializer}
    scales = [
        inits[n.input[1]]
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quantized")
    ]
    assert scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)
    assert _contract(int8).info["quantization"]["weights"] == "per-channel"
    assert agreement(fp32, int8, x)["mean_abs_dp"] < 0.05


def test_dequantized_weights_are_the_quantized_grid(default_int8: tuple[bytes, bytes]) -> None:
    fp32, int8 = default_int8
    weights = dequantized_weights(onnx.load_from_string(int8))
    fp32_proto = onnx.load_from_string(fp32)
    fp32_inits = {t.name: onnx.numpy_helper.to_array(t) for t in fp32_proto.graph.initializer}
    assert "stem.0.weight" in weights
    for name, w in weights.items():
        if name.endswith(".weight"):
            ref = fp32_inits[name]
            step = np.abs(ref).max() / 63  # 7-bit symmetric weights
            assert w.shape == ref.shape and float(np.abs(w - ref).max()) <= 0.51 * step + 1e-7


def test_calibrated_and_bias_corrected(equivariant: MobileNetV2, x: NDArray[np.float32]) -> None:
    fp32, int8, _ = quantize_plain(equivariant, CONTRACT, QuantConfig(calibrate=16, bias_correction=True), x)
    q = _contract(int8).info["quantization"]
    assert q["ranges"] == "calibrated 16" and q["bias_correction"] is True
    assert agreement(fp32, int8, x)["mean_abs_dp"] < 0.05
    with pytest.raises(ValueError, match="calibrat"):
        quantize_plain(equivariant, CONTRACT, QuantConfig(calibrate=16))
    with pytest.raises(ValueError, match="512"):
        QuantConfig(calibrate=513)


def test_agreement_is_checked_on_patches_not_calibrated_on() -> None:
    drawn = np.arange(80, dtype=np.float32).reshape(80, 1, 1, 1)
    calib, check = split_calibration(drawn, 16)
    assert calib is not None and len(calib) == 16 and len(check) == 64
    assert not set(calib.ravel().tolist()) & set(check.ravel().tolist())
    none, every = split_calibration(drawn[:64], 0)
    assert none is None and len(every) == 64
    with pytest.raises(ValueError, match="check"):
        split_calibration(drawn[:16], 16)


def test_real_patches(shared_data: Path, default_int8: tuple[bytes, bytes]) -> None:
    from training.data import read_zip

    patches = read_zip(shared_data / "pcam" / "pcam_train_valid.zip", max_per_split=16)["valid"].images
    fp32, int8 = default_int8
    x = prepare(patches, CONTRACT)
    result = agreement(fp32, int8, x)
    assert result["mean_abs_dp"] < 0.05 and result["argmax_agree"] >= 0.9


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_quantize_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_command_line_parses() -> None:
    args = _parse(["quantize", "runs/x/best.pt", "--out", "m.onnx", "--no-cle", "--calibrate", "64"])
    assert (args.checkpoint, args.out, args.no_cle, args.no_hba, args.calibrate) == (
        "runs/x/best.pt",
        "m.onnx",
        True,
        False,
        64,
    )


def test_command_refuses_onnx_input(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used")
    with caplog.at_level(logging.ERROR):
        assert cmd_quantize(_parse(["quantize", str(model)])) == 2
    assert "checkpoint" in caplog.text and len(caplog.records) == 1
    assert cmd_quantize(_parse(["quantize", str(tmp_path / "missing.pt")])) == 2


def test_command_refuses_a_resume_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.training.dfq_models import tiny_arch
    from training.cli import main

    last = tmp_path / "last.pt"  # raw weights, optimizer state, no epoch: what resumes a run
    torch.save({"arch": tiny_arch("conventional").to_dict(), "model": {}, "optimizer": {}, "state": {}}, last)
    with caplog.at_level(logging.ERROR):
        assert main(["quantize", str(last), "--out", str(tmp_path / "m.onnx"), "--data", ""]) == 2
    assert "best.pt" in caplog.text and len(caplog.records) == 1
    caplog.clear()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.ERROR):
        assert main(["quantize", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not a training checkpoint" in caplog.text and not (tmp_path / "m.onnx").exists()


def test_command_end_to_end(tmp_path: Path, equivariant: MobileNetV2) -> None:
    from tests.training.dfq_models import tiny_arch

    ckpt = {
        "arch": tiny_arch("conventional").to_dict(),
        "model": tiny_plain("conventional").state_dict(),
        "mean": list(CONTRACT.mean),
        "std": list(CONTRACT.std),
        "epoch": 1,
    }
    path = tmp_path / "best.pt"
    torch.save(ckpt, path)
    out = tmp_path / "int8.onnx"
    args = _parse(
        [
            "quantize",
            str(path),
            "--out",
            str(out),
            "--fp32-out",
            str(tmp_path / "fp32.onnx"),
            "--data",
            "",
            "--bias-correction",
        ]
    )
    assert cmd_quantize(args) == 0
    model = Model.load(out, threads=1)
    info = model.contract.info
    assert info["arch"] == "conventional" and info["quantization"]["bias_correction"] is True
    assert model.version.endswith("-int8")
    assert json.loads(onnx.load(str(out)).metadata_props[-1].value)["model_version"] == model.version
    assert any(p.key == METADATA_KEY for p in onnx.load(str(out)).metadata_props)


def test_antialiased_net_with_features_quantizes_invariant(x: NDArray[np.float32], tmp_path: Path) -> None:
    from training.features import FEATURES_NAME, with_feature_stats

    plain = tiny_plain("equivariant", group_order=4, antialias=True)
    contract = dataclasses.replace(CONTRACT, features_name=FEATURES_NAME)
    fp32, int8, _ = quantize_plain(plain, contract, QuantConfig(bias_correction=True))
    assert _ops(int8).count("Conv") > _ops(fp32).count("Conv") - 1  # the blurs stay convolutions
    assert agreement(fp32, int8, x)["argmax_agree"] >= 0.9
    base = onnx_logits(int8, x)
    for k in (1, 2, 3):
        rotated = onnx_logits(int8, np.ascontiguousarray(np.rot90(x, k, axes=(2, 3))))
        np.testing.assert_allclose(rotated, base, rtol=0, atol=1e-4 * float(np.abs(base).max()))
    patches = np.random.default_rng(0).integers(0, 256, size=(64, 95, 95, 3), dtype=np.uint8)
    path = tmp_path / "int8.onnx"
    path.write_bytes(with_feature_stats(int8, patches))
    model = Model.load(path, threads=1)
    probs, features = model.infer_prepared(prepare(patches[:8], model.contract))
    assert features is not None and features.shape == (8, plain.classifier.in_features)
    np.testing.assert_allclose(probs, model.predict(patches[:8]), rtol=0, atol=1e-6)
    stats = model.contract.feature_stats
    assert stats is not None and stats.n_patches == 64
    assert 0.3 < float(np.median(stats.distance(features))) < 3.0
