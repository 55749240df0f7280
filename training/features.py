"""The model's pooled features on its training patches: the statistics stored in the contract for
out-of-distribution checks (:class:`engine.ood.FeatureStats`).

They are measured on the final ONNX model (FP32 export or INT8 after quantization), because
cross-layer equalization rescales the pooled features per field.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from numpy.typing import NDArray

from engine.contract import METADATA_KEY
from engine.ood import FeatureStats
from engine.preprocess import prepare
from training.stamp import contract_of, restamp

log = logging.getLogger(__name__)

FEATURES_NAME = "features"
N_COMPONENTS = 32
N_PATCHES = 2000


def fit_feature_stats(features: NDArray[np.floating], n_components: int = N_COMPONENTS) -> FeatureStats:
    """Principal-component model of ``features`` (N x F): mean, top components, their variances and
    the mean squared residual."""
    f = np.asarray(features, dtype=np.float64)
    n, dim = f.shape
    k = min(n_components, dim, n - 1)
    if k < 1:
        raise ValueError(f"need at least 2 feature vectors, got {n}")
    mean = f.mean(axis=0)
    centred = f - mean
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    variances = sing[:k] ** 2 / (n - 1)
    floor = max(float(variances[0]) * 1e-6, 1e-12)  # dead directions must not divide by zero
    variances = np.maximum(variances, floor)
    comps = vt[:k]
    residual = centred - (centred @ comps.T) @ comps
    return FeatureStats(  # 7 significant digits: float32 precision, half the metadata text
        mean=tuple(_f32(v) for v in mean),
        components=tuple(tuple(_f32(v) for v in row) for row in comps),
        variances=tuple(_f32(v) for v in variances),
        residual_variance=float(max((residual**2).sum(axis=1).mean(), 1e-12)),
        n_patches=n,
    )


def _f32(value: float) -> float:
    return float(f"{value:.7g}")


def onnx_features(model_bytes: bytes, x: NDArray[np.float32], batch: int = 256) -> NDArray[np.float32]:
    """The model's ``features`` output for prepared inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    out = [
        session.run([FEATURES_NAME], {session.get_inputs()[0].name: x[i : i + batch]})[0]
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def with_feature_stats(model_bytes: bytes, patches: NDArray[np.uint8]) -> bytes:
    """``model_bytes`` with the statistics of its features on ``patches`` added to its contract."""
    contract = contract_of(model_bytes)
    if contract.features_name is None:
        raise ValueError(f"{METADATA_KEY}: the model exports no features")
    stats = fit_feature_stats(onnx_features(model_bytes, prepare(patches, contract)))
    log.info(
        "feature statistics: %d features, %d components, %d patches",
        len(stats.mean),
        len(stats.variances),
        stats.n_patches,
    )
    return restamp(model_bytes, lambda c: dataclasses.replace(c, feature_stats=stats))


def training_sample(data: object, cache_dir: object, n: int = N_PATCHES, seed: int = 0) -> NDArray[np.uint8]:
    """``n`` seeded training patches (raw uint8) for the feature statistics."""
    from pathlib import Path

    from training.data import load_patches

    train = load_patches(Path(str(data)), Path(str(cache_dir)))["train"]
    index = np.sort(np.random.default_rng(seed).choice(len(train), size=min(n, len(train)), replace=False))
    return np.asarray(train.images[index])
