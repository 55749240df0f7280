"""The network of an architecture config, and loading saved weights into it.

e2cnn is imported only when the equivariant network is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import ArchConfig
from training.errors import CheckpointError


def build_model(arch: ArchConfig) -> nn.Module:
    """The network for ``arch`` (e2cnn is imported only for the equivariant one)."""
    if arch.arch == "equivariant":
        from training.equivariant import EquivariantMobileNetV2

        return EquivariantMobileNetV2(arch)
    from training.mobilenet import MobileNetV2

    return MobileNetV2(arch)


def load_weights(model: nn.Module, state: dict[str, Any]) -> None:
    """Load a state dict saved in either mode: e2cnn keeps expanded ``filter`` buffers only in eval
    mode, so the model takes the mode the state was saved in."""
    model.train(not any(k.endswith(".filter") for k in state))
    model.load_state_dict(state)


def judged_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, which must hold weights a run judged (``best.pt``,
    ``epochs/NNN.pt``: averaged weights, epoch and history).

    A run's resume checkpoint (``last.pt``) is refused: its ``model`` is the raw, unaveraged
    network, and it records no epoch or history for the model's contract.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint there") from None
    except Exception as exc:  # torch raises several unrelated types for a file that is not one
        raise CheckpointError(f"{path}: not a training checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a training checkpoint (no architecture or weights)")
    if "optimizer" in ckpt and "epoch" not in ckpt:
        raise CheckpointError(
            f"{path} is a run's resume checkpoint (last.pt), without the averaged weights the run "
            "judged: pass its best.pt or one of its epochs/NNN.pt"
        )
    return ckpt
