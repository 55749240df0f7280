"""Held-out evaluation of an exported ONNX model: metrics with bootstrap intervals, rotation invariance.

Everything runs through onnxruntime and the engine's ``prepare``, i.e. exactly what the engine runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.contract import ModelContract
from engine.outputs import write_text_atomic
from engine.preprocess import fit_patches, prepare
from training import robustness
from training.augment import rotate
from training.metrics import METRICS, accuracy, auc, bootstrap_ci, operating_point
from training.splits import VALID_SPLIT_SEED, pixel_groups

log = logging.getLogger(__name__)

CURVE_STEP_DEG = 15


class OnnxClassifier:
    """An exported model and its contract: uint8 patches -> tumour probabilities."""

    def __init__(self, model_path: Path) -> None:
        import onnx
        import onnxruntime as ort

        proto = onnx.load(str(model_path))
        self.contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
        self.session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def prob(self, patches: NDArray[np.uint8], batch: int = 256) -> NDArray[np.float64]:
        """Tumour probability of each patch (softmax of the logits, as the engine)."""
        out = []
        for start in range(0, len(patches), batch):
            x = prepare(np.ascontiguousarray(patches[start : start + batch]), self.contract)
            (logits,) = self.session.run([self.contract.output_name], {self.contract.input_name: x})
            z = logits.astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            out.append(p[:, self.contract.positive_index])
        return np.concatenate(out)


def rot90_deltas(clf: OnnxClassifier, patches: NDArray[np.uint8]) -> dict[str, float]:
    """Max and mean |p(rot^k x) - p(x)| over k = 1, 2, 3 (exact pixel rotations)."""
    fitted = fit_patches(patches, clf.contract.input_size)
    base = clf.prob(fitted)
    deltas = np.stack(
        [np.abs(clf.prob(np.ascontiguousarray(np.rot90(fitted, k, axes=(1, 2)))) - base) for k in (1, 2, 3)]
    )
    return {"rot90_max_abs_dp": float(deltas.max()), "rot90_mean_abs_dp": float(deltas.mean())}


def rotation_curve(
    clf: OnnxClassifier, patches: NDArray[np.uint8], step_deg: int = CURVE_STEP_DEG
) -> tuple[list[int], list[float]]:
    """Mean |p(rotated x) - p(x)| for angles 0..360 (bilinear, then the engine's circular mask)."""
    fitted = fit_patches(patches, clf.contract.input_size)
    base = clf.prob(fitted)
    angles = list(range(0, 361, step_deg))
    curve = []
    for angle in angles:
        rotated = np.stack([rotate(p, float(angle)) for p in fitted])
        curve.append(float(np.abs(clf.prob(rotated) - base).mean()))
    return angles, curve


def stability(
    clf: OnnxClassifier,
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    clean_auc: float,
) -> dict[str, Any]:
    """One-pixel-shift stability and the AUC under each perturbation path of
    :mod:`training.robustness`, with its drop from ``clean_auc``."""
    size = clf.contract.input_size
    out: dict[str, Any] = {}
    if images.shape[1] > size:
        out.update(robustness.shift_stability([clf.prob(c) for c in robustness.crops(images, size)]))
        log.info(
            "one-pixel shift: mean |dp| %.4f, p95 %.4f, max %.4f, decision flips %.2f%%",
            out["shift_mean_abs_dp"],
            out["shift_p95_abs_dp"],
            out["shift_max_abs_dp"],
            100 * out["shift_flip_rate"],
        )
    for name, path in robustness.PATHS.items():
        value = auc(labels, clf.prob(path(images)))
        out[f"auc_{name}"] = value
        out[f"auc_drop_{name}"] = clean_auc - value
        log.info("AUC under %s: %.4f (drop %.4f)", name, value, clean_auc - value)
    return out


def train_subset(
    data: Path, cache_dir: Path, n: int, info: Mapping[str, Any], seed: int = 0
) -> tuple[NDArray[np.uint8], NDArray[np.int64], str]:
    """A seeded, stratified sample of ``n`` patches the model trained on (to compare train and
    held-out), and where it was drawn from, in words.

    A run on fewer patches than the split (``--train-size``) trained on its own stratified subset;
    the contract's ``info`` records its size and seed (``train_patches``, ``train_seed``), and the
    sample is drawn from that subset. A model that does not record them is sampled from the whole
    split, and the words say so.
    """
    from training.data import load_patches
    from training.splits import stratified_subset

    train = load_patches(data, cache_dir)["train"]
    trained, trained_seed = info.get("train_patches"), info.get("train_seed")
    source = "the model's training patches"
    if trained is not None and int(trained) < len(train):
        if trained_seed is None:
            source = f"the whole split: the model trained on {trained} of it and does not record which"
        else:
            train = train.subset(stratified_subset(train.labels, int(trained), int(trained_seed)))
    sample = train.subset(stratified_subset(train.labels, n, seed))
    return np.asarray(sample.images), sample.labels, source


def plot_curve(curves: dict[str, tuple[list[int], list[float]]], path: Path) -> None:
    """Save the rotation-sensitivity curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for label, (angles, values) in curves.items():
        ax.plot(angles, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("rotation of the input (degrees)")
    ax.set_ylabel("mean |p(rotated) - p(original)|")
    ax.set_xticks(range(0, 361, 45))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate_onnx(
    model_path: Path,
    data: Path,
    cache_dir: Path,
    out_dir: Path | None = None,
    limit: int | None = None,
    curve_patches: int = 200,
    n_boot: int = 1000,
    split_seed: int = VALID_SPLIT_SEED,
    train_patches: int = 1000,
    stamp: bool = False,
) -> dict[str, Any]:
    """Metrics on the held-out half of ``valid`` with 95% bootstrap intervals, invariance and
    stability (one-pixel shifts, blur, the 40x path, stain changes), and the same metrics on
    ``train_patches`` training patches so under- and over-fitting show (0 skips them).

    ``curve_patches=0`` skips the continuous-angle curve (the slowest part). ``stamp`` records
    the numbers in the model file's contract (:func:`stamp_heldout`).
    """
    from training.data import load_patches
    from training.train import valid_halves

    clf = OnnxClassifier(model_path)
    _, heldout = valid_halves(load_patches(data, cache_dir)["valid"], split_seed)
    images = np.asarray(heldout.images[:limit])
    labels = heldout.labels[:limit]
    prob = clf.prob(images)
    result: dict[str, Any] = {
        "model": str(model_path),
        "model_version": clf.contract.model_version,
        "heldout_patches": len(labels),
        "split_seed": split_seed,
        "n_boot": n_boot,
    }
    groups = pixel_groups(images)  # copies of one patch are resampled together
    result["ci_resampling"] = f"{len(np.unique(groups))} groups of pixel-identical patches"
    for name, metric in METRICS.items():
        est, low, high = bootstrap_ci(labels, prob, metric, n_boot=n_boot, groups=groups)
        result[name] = {"value": est, "ci95": [low, high]}
        log.info("held-out %s %.4f (95%% CI %.4f-%.4f)", name, est, low, high)
    # Patch probabilities meet one threshold of the policy, the tile threshold; its low and high
    # thresholds apply to the slide score, so a patch-level figure at them would mean nothing.
    point = operating_point(labels, prob, clf.contract.triage.tile_threshold)
    result["operating_points"] = [point]
    log.info(
        "patch-level sensitivity/specificity at the tile threshold %g: %.3f/%.3f",
        point["threshold"],
        point["sensitivity"],
        point["specificity"],
    )
    if train_patches > 0:
        train_images, train_labels, source = train_subset(data, cache_dir, train_patches, clf.contract.info)
        train_prob = clf.prob(train_images)
        result["train_subset"] = {
            "patches": len(train_labels),
            "drawn_from": source,
            "accuracy": accuracy(train_labels, train_prob),
            "auc": auc(train_labels, train_prob),
        }
        log.info(
            "training subset (%d patches, from %s): accuracy %.4f, AUC %.4f",
            len(train_labels),
            source,
            result["train_subset"]["accuracy"],
            result["train_subset"]["auc"],
        )
    result["stability"] = stability(clf, images, labels, result["auc"]["value"])
    result.update(rot90_deltas(clf, images))
    log.info(
        "rot90/180/270: max |dp| %.3g, mean |dp| %.3g",
        result["rot90_max_abs_dp"],
        result["rot90_mean_abs_dp"],
    )
    out_dir = out_dir or Path("runs") / f"eval-{model_path.stem}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if curve_patches > 0:
        angles, curve = rotation_curve(clf, images[:curve_patches])
        result["rotation_curve"] = {
            "angles_deg": angles,
            "mean_abs_dp": curve,
            "patches": min(curve_patches, len(images)),
        }
        log.info(
            "rotation curve (mean |dp|): %s",
            ", ".join(f"{a}:{v:.3g}" for a, v in zip(angles, curve, strict=True)),
        )
        plot_curve({clf.contract.model_version: (angles, curve)}, out_dir / "rotation_curve.png")
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2))
    log.info("wrote %s", out_dir)
    if stamp:
        stamp_heldout(model_path, result)
    return result


HELDOUT_KEYS = (
    "heldout_patches",
    "split_seed",
    "accuracy",
    "auc",
    "nll",
    "train_subset",
    "stability",
    "rot90_max_abs_dp",
    "operating_points",
)


def stamp_heldout(model_path: Path, result: dict[str, Any]) -> None:
    """Record the held-out numbers in the model's contract (``info["heldout"]``), where the app's
    About box and report read them; the weights are untouched."""
    import dataclasses

    from engine.outputs import write_bytes_atomic
    from training.stamp import restamp

    heldout = {k: result[k] for k in HELDOUT_KEYS if k in result}

    def change(c: ModelContract) -> ModelContract:
        return dataclasses.replace(c, info={**c.info, "heldout": heldout})

    write_bytes_atomic(model_path, restamp(model_path.read_bytes(), change))
    log.info("recorded the held-out numbers in %s", model_path)
