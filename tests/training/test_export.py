"""Export: e2cnn model, plain PyTorch and onnxruntime agree; the file carries the engine's contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from engine.contract import METADATA_KEY, ModelContract
from engine.preprocess import prepare
from training.batches import channel_stats, make_batch
from training.config import ArchConfig
from training.data import Patches
from training.export import make_contract, onnx_logits, parity, to_onnx, to_plain
from training.features import onnx_features
from training.models import build_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _trained(arch: str, small_pcam: dict[str, Patches]) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    cfg = ArchConfig(arch=arch, width=0.25, strides=(True,) * 5)
    model = build_model(cfg)
    train = small_pcam["train"]
    mean, std = channel_stats(train.images, 95)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for start in range(0, 64, 16):  # a few steps: non-trivial weights and BN statistics
        x = make_batch(train.images[start : start + 16], 95, mean, std)
        y = torch.from_numpy(train.labels[start : start + 16])
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), {"mean": mean, "std": std, "arch": cfg.to_dict()}


@pytest.mark.parametrize("arch", ["equivariant", "conventional"])
def test_export_parity_on_real_patches(small_pcam: dict[str, Patches], arch: str, tmp_path: Path) -> None:
    model, ckpt = _trained(arch, small_pcam)
    cfg = ArchConfig.from_dict(ckpt["arch"])
    plain = to_plain(model)
    if arch == "equivariant":
        assert not any("e2cnn" in type(m).__module__ for m in plain.modules())
    contract = make_contract(cfg, ckpt, plain, {"arch": arch})
    model_bytes = to_onnx(plain, 95, contract)
    patches = np.asarray(small_pcam["valid"].images[:32])
    numbers = parity(model, plain, model_bytes, patches)
    assert numbers["input_max_abs"] == 0.0
    assert numbers["source_vs_plain_logits"] < 1e-5
    assert numbers["plain_vs_onnx_logits"] < 1e-4
    assert numbers["source_vs_onnx_prob"] < 1e-5

    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes)
    proto = onnx.load(str(path))
    assert list(tmp_path.iterdir()) == [path]  # one file, no external data
    read = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
    assert read == contract
    assert METADATA_KEY in {p.key for p in proto.metadata_props}
    assert read.mask_radius == 47.5 and read.input_size == 95
    assert read.classes == ("normal", "tumour") and read.positive_index == 1
    assert read.model_version.startswith(f"{arch}-")
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits", "features"]
    assert read.features_name == "features"
    x = prepare(patches, read)
    with torch.no_grad():
        expected = plain.features(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_features(model_bytes, x), expected, rtol=0, atol=1e-4)
    for n in (1, 5):  # dynamic batch
        out = onnx_logits(model_bytes, prepare(patches[:n], read))
        assert out.shape == (n, 2)
