"""Parameter and multiply-accumulate counts per patch, measured on the plain PyTorch network."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from training.config import ArchConfig
from training.layers import BlurPool

log = logging.getLogger(__name__)


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: int) -> int:
    """MACs of one patch through every Conv2d, anti-aliasing blur and Linear (hooks on a real
    forward pass)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out[0].numel() * (m.in_channels // m.groups) * k

    def blur_hook(m: BlurPool, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.kernel.shape[-1] * m.kernel.shape[-2]

    def linear_hook(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, BlurPool):
            handles.append(m.register_forward_hook(blur_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


def summarise(cfg: ArchConfig) -> dict[str, Any]:
    """Trainable parameters, exported (plain) parameters and MACs per patch of ``cfg``'s net."""
    from training.mobilenet import MobileNetV2

    if cfg.arch == "equivariant":
        from training.equivariant import EquivariantMobileNetV2, to_plain

        equivariant = EquivariantMobileNetV2(cfg)
        model: nn.Module = equivariant
        plain = to_plain(equivariant)
    else:
        model = plain = MobileNetV2(cfg)
    depthwise = sum(m.weight.numel() for m in plain.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
    dw_trainable = (
        sum(p.numel() for n, p in model.named_parameters() if n.endswith("weights") and p.ndim == 2)
        if cfg.arch == "equivariant"
        else depthwise
    )
    return {
        "arch": cfg.arch,
        "group": cfg.group_name,
        "width": cfg.width,
        "strides": cfg.strides_text(),
        "params": count_params(model),
        "params_exported": count_params(plain),
        "depthwise_params": dw_trainable,
        "macs": count_macs(plain, cfg.input_size),
    }


def log_summary(cfg: ArchConfig) -> None:
    """Log parameters and MACs of the conventional and equivariant nets at ``cfg``'s plan."""
    for arch in ("conventional", "equivariant"):
        s = summarise(dataclasses.replace(cfg, arch=arch))
        log.info(
            "%-12s %-4s width %.2f expansion %d strides %s%s: %9d trainable params (%9d exported, "
            "depthwise %7d), %.2f M MACs/patch",
            s["arch"],
            s["group"],
            s["width"],
            cfg.expansion,
            s["strides"],
            f" anti-aliased (blur {cfg.blur_kernel})" if cfg.antialias else "",
            s["params"],
            s["params_exported"],
            s["depthwise_params"],
            s["macs"] / 1e6,
        )
