"""What ``python -m training quantize``, ``study`` and ``results`` do once their options are parsed.

Each returns the exit status: 0, or 2 with a one-line message on bad input. The heavy imports
(torch, onnx, matplotlib) happen inside each command.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cmd_quantize(args: argparse.Namespace) -> int:
    """Run ``quantize``; returns the exit status (2 with a one-line message on bad input)."""
    from training.quantize import QuantConfig, quantize_checkpoint

    checkpoint = Path(args.checkpoint)
    if checkpoint.suffix.lower() == ".onnx":
        log.error(
            "%s is an ONNX file; pass the training checkpoint (.pt) it was exported from: "
            "data-free quantization needs the batch-norm statistics",
            checkpoint,
        )
        return 2
    if not checkpoint.is_file():
        log.error("%s: no checkpoint there", checkpoint)
        return 2
    try:
        cfg = QuantConfig(
            cle=not args.no_cle,
            hba=not args.no_hba,
            bias_correction=args.bias_correction,
            per_channel=args.per_channel,
            calibrate=args.calibrate,
            range_sigmas=args.range_sigmas,
            reduce_range=not args.no_reduce_range,
        )
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    data = Path(args.data) if args.data else None
    if data is not None and not data.exists():
        if cfg.calibrate:
            log.error("%s: no PCam data there (needed by --calibrate)", data)
            return 2
        log.warning("%s not found: checking INT8 against FP32 on random inputs", data)
        data = None
    quantize_checkpoint(
        checkpoint,
        Path(args.out),
        cfg,
        data,
        Path(args.cache_dir),
        Path(args.fp32_out) if args.fp32_out else None,
    )
    return 0


def cmd_study(args: Any) -> int:
    """Run ``study``; 2 with a one-line message on bad input."""
    from training.study import parse_variants, study_run

    try:
        variants = parse_variants(args.variants)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    data = Path(args.data)
    if not data.exists():
        log.error("%s: no PCam data there; pass --data", data)
        return 2
    missing = [r for r in args.runs if not (Path(r) / "best.pt").is_file()]
    if missing:
        log.error("no best.pt in %s; train those runs first or leave them out", ", ".join(missing))
        return 2
    for run in args.runs:
        study_run(
            Path(run), Path(args.out), variants, data, Path(args.cache_dir), args.curve_patches, args.n_boot
        )
    return 0


def cmd_results(args: Any) -> int:
    """Run ``results``; 2 with a one-line message on bad input."""
    from training.results.document import write_results

    doc = Path(args.doc)
    if not doc.is_file():
        log.error("%s: no such document; create it with the <!-- results:NAME --> blocks", doc)
        return 2
    speed = Path(args.speed) if args.speed else None
    recipe = (Path(args.recipe[0]), Path(args.recipe[1])) if args.recipe else None
    for json_path in (speed, recipe[1] if recipe else None):
        if json_path is not None and not json_path.is_file():
            log.error("%s: no such file; run benchmarks/model_speed.py --json %s first", json_path, json_path)
            return 2
    try:
        write_results(Path(args.study), doc, Path(args.figures), speed, recipe)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    return 0
