"""Exponential moving average of a model's weights (Polyak averaging), evaluated and selected on.

Parameters and batch-norm statistics are averaged; every other buffer is copied. Those are
constants (the steerable basis, the input mask, the blur kernels, the pooling weights) or counts,
and an average of a constant drifts by float32 rounding: after thousands of updates the basis
would no longer be exactly steerable. The decay warms up as ``(1 + t) / (10 + t)`` so early
averages are not dominated by the random initialisation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from training.models import load_weights

BATCH_NORM_STATISTICS = frozenset({"running_mean", "running_var"})  # buffers that are averaged


class WeightEMA:
    """An averaged copy of ``model``, updated after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def effective_decay(self) -> float:
        """The decay of the next update (warm-up included)."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # Back to training mode first: e2cnn caches expanded filters while in eval mode and
        # recomputes them only on the switch to eval, which evaluation then makes.
        self.model.train()
        d = self.effective_decay()
        mine = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        averaged = {name for name, _ in model.named_parameters()}
        for name, new in [*model.named_parameters(), *model.named_buffers()]:
            value = mine.get(name)
            if value is None:  # a filter e2cnn cached in eval mode: derived, rebuilt on eval()
                continue
            if name in averaged or name.rsplit(".", 1)[-1] in BATCH_NORM_STATISTICS:
                value.mul_(d).add_(new, alpha=1.0 - d)
            else:
                value.copy_(new)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        self.model.eval()  # e2cnn's advice: state dicts are saved and loaded in eval mode
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        load_weights(self.model, state["model"])
