"""The network of an architecture config, and loading saved weights into it.

e2cnn is imported only when the equivariant network is built.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from training.config import ArchConfig


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
