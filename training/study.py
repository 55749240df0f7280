"""The quantization study: every trained run exported, quantized several ways and evaluated.

    python -m training study runs/table/* --out runs/study [--variants fp32,int8-dfq-bc]

For each run folder (with its ``best.pt``) this writes ``<out>/<run>/run.json`` (what was trained)
and, per variant, ``<variant>.onnx`` and ``<variant>/metrics.json`` (held-out metrics and rotation
figures, ``training.evaluate``). Finished variants are skipped, so the study resumes after a stop.
``python -m training results`` turns the folder into the tables and plots of ``docs/results.md``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.outputs import write_text_atomic
from training.quantize import QuantConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One way of turning a checkpoint into an ONNX model (``quant`` None: the plain FP32 export)."""

    name: str
    label: str
    quant: QuantConfig | None


VARIANTS: tuple[Variant, ...] = (
    Variant("fp32", "FP32", None),
    Variant("int8-naive", "INT8 per-tensor, no DFQ", QuantConfig(cle=False, hba=False)),
    Variant("int8-cle", "+ CLE", QuantConfig(hba=False)),
    Variant("int8-dfq", "+ CLE + HBA", QuantConfig()),
    Variant("int8-dfq-bc", "+ CLE + HBA + bias corr.", QuantConfig(bias_correction=True)),
    Variant(
        "int8-per-channel", "INT8 per-channel, no DFQ", QuantConfig(cle=False, hba=False, per_channel=True)
    ),
    Variant("int8-dfq-cal512", "+ CLE + HBA, calibrated on 512", QuantConfig(calibrate=512)),
)
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}
SHIPPED_VARIANT = "int8-dfq-bc"  # the recipe of assets/model.onnx


def parse_variants(text: str | None) -> list[Variant]:
    """Variants named in a comma-separated list (all of them for None or '')."""
    if not text:
        return list(VARIANTS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANT_BY_NAME]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANT_BY_NAME)}")
    return [VARIANT_BY_NAME[n] for n in names]


def run_record(checkpoint: Path) -> dict[str, Any]:
    """What a checkpoint was trained as: architecture, group, width, recipe, seed, data, epochs.

    ``selection_loss`` is the best epoch's loss on the selection half (what chose the checkpoint).
    """
    from training.export import load_checkpoint

    _, ckpt = load_checkpoint(checkpoint)
    arch, cfg = ckpt["arch"], ckpt.get("train_config", {})
    history = ckpt.get("history", [])
    return {
        "checkpoint": str(checkpoint),
        "arch": arch["arch"],
        "group_order": arch["group_order"] if arch["arch"] == "equivariant" else 1,
        "width": arch["width"],
        "jitter": cfg.get("jitter", 0.0),
        "rotate_deg": cfg.get("rotate_deg", 0.0),
        "seed": cfg.get("seed"),
        "train_patches": ckpt.get("n_train"),
        "epochs": cfg.get("epochs"),
        "best_epoch": ckpt.get("epoch"),
        "patches_seen": (ckpt.get("n_train") or 0) * (cfg.get("epochs") or 0),
        "selection_loss": min((h["val_loss"] for h in history if "val_loss" in h), default=None),
        "train_patches_per_s": [h.get("patches_per_s") for h in history],
    }


def study_run(
    run_dir: Path,
    out: Path,
    variants: list[Variant],
    data: Path,
    cache_dir: Path,
    curve_patches: int,
    n_boot: int,
) -> Path:
    """Export, quantize and evaluate one run; returns its study folder."""
    from training.evaluate import evaluate_onnx
    from training.export import export_checkpoint
    from training.quantize import quantize_checkpoint

    checkpoint = run_dir / "best.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{run_dir}: no best.pt; train it first (python -m training train)")
    folder = out / run_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "run.json", json.dumps(run_record(checkpoint), indent=2))
    for variant in variants:
        metrics = folder / variant.name / "metrics.json"
        if metrics.is_file():
            log.info("%s %s: done already", run_dir.name, variant.name)
            continue
        model = folder / f"{variant.name}.onnx"
        if variant.quant is None:
            export_checkpoint(checkpoint, model, data=data, cache_dir=cache_dir)
        else:
            quantize_checkpoint(checkpoint, model, variant.quant, data, cache_dir)
        evaluate_onnx(
            model, data, cache_dir, folder / variant.name, curve_patches=curve_patches, n_boot=n_boot
        )
    return folder
