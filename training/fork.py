"""Fork a run: continue a checkpointed run in a new folder with another blur or seam setting.

The anti-aliasing blur is a fixed, untrained low-pass, so a run can switch its size part-way and
keep every learned weight, its optimiser, schedule and random state: only the blur buffers are
rebuilt. The seam-composite probability (``TrainConfig.seam_p``) is part of the data, not the
network, and changes nothing but the training config. The fork's best-so-far is reset (another
network or another training distribution) and its history records where it came from. Resume
the fork with ``train --out DST --resume``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch

from training.config import ArchConfig

log = logging.getLogger(__name__)


def reblur_state(state: dict[str, Any], fresh: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``state`` with every tensor whose shape differs from ``fresh`` taken from ``fresh``.

    Only blur kernels may differ (names ending in ``kernel``); anything else is a mistake.
    """
    out = dict(state)
    for name, value in state.items():
        new = fresh.get(name)
        if new is None or new.shape == value.shape:
            continue
        if not name.endswith("kernel"):
            raise ValueError(f"{name} changes shape {tuple(value.shape)} -> {tuple(new.shape)}: not a blur")
        out[name] = new.clone()
    return out


def fork_run(src: Path, dst: Path, blur_kernel: int | None = None, seam_p: float | None = None) -> Path:
    """Write ``dst/last.pt``: ``src/last.pt`` continued with another blur size and/or seam setting."""
    from training.models import build_model
    from training.train import save_checkpoint

    if blur_kernel is None and seam_p is None:
        raise ValueError("a fork changes the blur size, the seam-composite probability or both")
    if (dst / "last.pt").is_file():
        raise FileExistsError(f"{dst} already holds a run; choose another folder")
    ckpt = torch.load(src / "last.pt", map_location="cpu", weights_only=False)
    old = ArchConfig.from_dict(ckpt["arch"])
    changes: dict[str, Any] = {}
    if blur_kernel is not None:
        if not old.antialias:
            raise ValueError(f"{src} was trained without anti-aliasing; there is no blur to change")
        arch = dataclasses.replace(old, blur_kernel=blur_kernel)
        model = build_model(arch)
        model.eval()  # checkpoints hold eval-mode state dicts (with e2cnn's expanded filters)
        fresh = model.state_dict()
        ckpt["arch"] = arch.to_dict()
        ckpt["model"] = reblur_state(ckpt["model"], fresh)
        if "ema" in ckpt:
            ckpt["ema"] = {**ckpt["ema"], "model": reblur_state(ckpt["ema"]["model"], fresh)}
        changes["blur_kernel"] = [old.blur_kernel, blur_kernel]
    if seam_p is not None:
        if not 0.0 <= seam_p <= 1.0:
            raise ValueError(f"seam probability must be in [0, 1], got {seam_p}")
        changes["seam_p"] = [ckpt["train_config"].get("seam_p", 0.0), seam_p]
        ckpt["train_config"] = {**ckpt["train_config"], "seam_p": seam_p}
    ckpt["train_config"] = {**ckpt["train_config"], "out_dir": str(dst)}
    state = dict(ckpt["state"])
    epoch = int(state["epoch"])
    state.update(best_loss=math.inf, best_epoch=-1)
    state["forked"] = {"from": str(src), "epoch": epoch, **changes}
    ckpt["state"] = state
    out = dst / "last.pt"
    save_checkpoint(ckpt, out)
    log.info("forked %s at epoch %d into %s: %s", src, epoch, dst, changes)
    return out
