"""Data-free quantization maths (Nagel et al. 2019) on the plain PyTorch MobileNetV2.

Everything here works on :class:`training.mobilenet.MobileNetV2` (the conventional net, or the
equivariant net after :func:`training.export.to_plain`) and uses only its weights and batch-norm
statistics, never data:

* :func:`fold_batchnorm` folds every BN into its convolution and keeps, per output channel, the
  Gaussian model of the pre-activation that the BN implies (mean ``beta``, std ``|gamma|``);
* :func:`equalize` is cross-layer range equalization over every conv -> ReLU -> conv pair
  (depthwise included, and last conv -> ReLU -> pool -> group max -> classifier), iterated to
  convergence;
* :func:`absorb_high_bias` moves ``max(0, beta - 3 gamma)`` of each ReLU's input into the next layer;
* :func:`correct_bias` removes the expected output error of quantized weights analytically.

For the equivariant net (``group_pool.order = N > 1``) channels are field-major (channel ``c``
belongs to field ``c // N``) and every per-channel scale or shift is shared by the N channels of a
field. A rotation by 90 degrees permutes the channels inside each field, so per-field factors
commute with it and the network stays exactly invariant.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from training.mobilenet import InvertedResidual, MobileNetV2

log = logging.getLogger(__name__)

CLASSIFIER = "classifier"


@dataclass
class PreActivation:
    """Per-channel Gaussian model of a conv output (the BN output): mean and standard deviation."""

    mean: torch.Tensor
    std: torch.Tensor

    def scaled(self, factor: torch.Tensor) -> PreActivation:
        """The model of ``x * factor`` (factor > 0, per channel)."""
        return PreActivation(self.mean * factor, self.std * factor)


@dataclass(frozen=True)
class Pair:
    """Two layers with one ReLU between them: ``first`` is a conv unit, ``second`` a unit or the
    classifier (reached through the masked average pool and the group max pool)."""

    first: str
    second: str


def blocks_of(model: MobileNetV2) -> list[InvertedResidual]:
    """The inverted residual blocks, in order."""
    return [b for b in model.get_submodule("blocks").children() if isinstance(b, InvertedResidual)]


def _n_units(block: InvertedResidual) -> int:
    return len(list(block.get_submodule("units").children()))


def unit_names(model: MobileNetV2) -> list[str]:
    """Module paths of every conv unit, in forward order (``stem``, ``blocks.i.units.j``, ``last``)."""
    names = ["stem"]
    for i, block in enumerate(blocks_of(model)):
        names.extend(f"blocks.{i}.units.{j}" for j in range(_n_units(block)))
    names.append("last")
    return names


def _unit(model: nn.Module, name: str) -> nn.Sequential:
    unit = model.get_submodule(name)
    if not isinstance(unit, nn.Sequential):
        raise TypeError(f"{name} is not a conv unit")
    return unit


def conv_of(model: nn.Module, name: str) -> nn.Conv2d:
    """The convolution of unit ``name``."""
    conv = _unit(model, name)[0]
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{name}[0] is not a Conv2d")
    return conv


def has_relu(model: nn.Module, name: str) -> bool:
    """Whether unit ``name`` ends with a ReLU."""
    return any(isinstance(m, nn.ReLU) for m in _unit(model, name))


def field_size(model: MobileNetV2) -> int:
    """Channels per field that must share a factor: the group order N, or 1."""
    return int(model.group_pool.order)


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing ``bn(conv(x))`` in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm has no running statistics")
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias.detach() - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach() * scale
    k, st, pad = conv.kernel_size, conv.stride, conv.padding
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        (k[0], k[1]),
        stride=(st[0], st[1]),
        padding=pad if isinstance(pad, str) else (pad[0], pad[1]),
        groups=conv.groups,
        bias=True,
    )
    with torch.no_grad():
        folded.weight.copy_(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_(bias)  # type: ignore[union-attr]
    return folded


def fold_batchnorm(model: MobileNetV2) -> tuple[MobileNetV2, dict[str, PreActivation]]:
    """Copy of ``model`` (eval mode) with every BN folded away, and each unit's pre-activation model.

    The BN of a folded unit becomes ``nn.Identity``; the pre-activation of unit ``u`` is modelled
    per channel as N(beta, gamma^2), the BN's output distribution on its training statistics.
    """
    folded = copy.deepcopy(model).eval()
    stats: dict[str, PreActivation] = {}
    for name in unit_names(folded):
        unit = _unit(folded, name)
        conv, bn = unit[0], unit[1]
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"{name} is not Conv2d + BatchNorm2d (already folded?)")
        unit[0] = fold_bn_into_conv(conv, bn)
        unit[1] = nn.Identity()
        stats[name] = PreActivation(bn.bias.detach().clone(), bn.weight.detach().abs().clone())
    return folded, stats


def relu_pairs(model: MobileNetV2) -> list[Pair]:
    """Every conv -> ReLU -> layer pair whose intermediate tensor has no other consumer.

    Inside a block: expand -> depthwise -> project. The stem feeds the first block (only if that
    block adds no residual), and the last conv feeds the classifier through the pools.
    """
    pairs: list[Pair] = []
    blocks = blocks_of(model)
    if not blocks[0].residual:
        pairs.append(Pair("stem", "blocks.0.units.0"))
    for i, block in enumerate(blocks):
        for j in range(_n_units(block) - 1):
            name = f"blocks.{i}.units.{j}"
            if has_relu(model, name):
                pairs.append(Pair(name, f"blocks.{i}.units.{j + 1}"))
    pairs.append(Pair("last", CLASSIFIER))
    return pairs


def _field_max(values: torch.Tensor, n: int) -> torch.Tensor:
    """Per-channel values -> max over each field, repeated back to every channel of the field."""
    return values.reshape(-1, n).amax(dim=1).repeat_interleave(n)


def _field_min(values: torch.Tensor, n: int) -> torch.Tensor:
    return values.reshape(-1, n).amin(dim=1).repeat_interleave(n)


def output_ranges(model: nn.Module, name: str) -> torch.Tensor:
    """max |w| of each output channel of unit ``name``."""
    w = conv_of(model, name).weight.detach()
    return w.abs().flatten(1).amax(dim=1)


def input_ranges(model: MobileNetV2, name: str) -> torch.Tensor:
    """max |w| acting on each input channel of layer ``name`` (per channel of the first layer's
    output; for the classifier, each pooled field's value is repeated over its N channels)."""
    if name == CLASSIFIER:
        per_field = model.classifier.weight.detach().abs().amax(dim=0)
        return per_field.repeat_interleave(field_size(model))
    conv = conv_of(model, name)
    w = conv.weight.detach()
    if conv.groups == 1:
        return w.abs().transpose(0, 1).flatten(1).amax(dim=1)
    if conv.groups == conv.in_channels == conv.out_channels:
        return w.abs().flatten(1).amax(dim=1)
    raise ValueError(f"{name}: grouped convolutions other than depthwise are not supported")


def equalization_scales(r1: torch.Tensor, r2: torch.Tensor, n: int) -> torch.Tensor:
    """Nagel et al. eq. 11, ``s = sqrt(r1 / r2)`` per field (ranges maxed over each field's N
    channels so the N channels share one factor); dead channels keep ``s = 1``."""
    f1, f2 = _field_max(r1, n), _field_max(r2, n)
    s = torch.sqrt(f1 / f2)
    ok = (f1 > 0) & (f2 > 0) & torch.isfinite(s)
    return torch.where(ok, s, torch.ones_like(s))


@torch.no_grad()
def scale_pair(model: MobileNetV2, pair: Pair, s: torch.Tensor, stats: dict[str, PreActivation]) -> None:
    """Divide the first layer's output channels by ``s`` and multiply the second layer's inputs by
    ``s``; with a ReLU between them (positively homogeneous) the function is unchanged."""
    first = conv_of(model, pair.first)
    first.weight.div_(s.reshape(-1, 1, 1, 1))
    if first.bias is not None:
        first.bias.div_(s)
    stats[pair.first] = stats[pair.first].scaled(1.0 / s)
    if pair.second == CLASSIFIER:
        n = field_size(model)
        model.classifier.weight.mul_(s.reshape(-1, n)[:, 0].reshape(1, -1))
        return
    second = conv_of(model, pair.second)
    if second.groups == 1:
        second.weight.mul_(s.reshape(1, -1, 1, 1))
    else:
        second.weight.mul_(s.reshape(-1, 1, 1, 1))


@dataclass(frozen=True)
class EqualizationReport:
    """How cross-layer equalization ended."""

    iterations: int
    converged: bool
    last_max_log_scale: float
    pairs: int


def equalize(
    model: MobileNetV2,
    stats: dict[str, PreActivation],
    max_iterations: int = 200,
    tol: float = 1e-6,
) -> EqualizationReport:
    """Cross-layer range equalization of every ReLU pair, swept until all scales are within
    ``tol`` of 1 (|log s| < tol) or ``max_iterations`` sweeps. Works in place on a BN-folded net."""
    n = field_size(model)
    pairs = relu_pairs(model)
    worst = math.inf
    for sweep in range(1, max_iterations + 1):
        worst = 0.0
        for pair in pairs:
            s = equalization_scales(output_ranges(model, pair.first), input_ranges(model, pair.second), n)
            worst = max(worst, float(s.log().abs().max()))
            scale_pair(model, pair, s, stats)
        if worst < tol:
            log.info("equalization converged after %d sweeps over %d pairs", sweep, len(pairs))
            return EqualizationReport(sweep, True, worst, len(pairs))
    log.warning("equalization stopped after %d sweeps (max |log s| %.3g)", max_iterations, worst)
    return EqualizationReport(max_iterations, False, worst, len(pairs))


def high_bias(stats: PreActivation, n: int, n_sigma: float = 3.0) -> torch.Tensor:
    """Amount ``c = max(0, beta - n_sigma |gamma|)`` each ReLU input can lose without (almost)
    ever changing sign, minimised over each field so it is shared by the field's N channels."""
    c = torch.clamp(stats.mean - n_sigma * stats.std, min=0.0)
    return _field_min(c, n)


def _absorbed_bias(model: MobileNetV2, name: str, c: torch.Tensor) -> torch.Tensor:
    """What layer ``name`` adds to its bias when its input loses ``c`` per channel (border effects
    of zero padding ignored)."""
    if name == CLASSIFIER:
        n = field_size(model)
        return model.classifier.weight.detach() @ c.reshape(-1, n)[:, 0]
    conv = conv_of(model, name)
    w = conv.weight.detach()
    if conv.groups == 1:
        return (w.sum(dim=(2, 3)) * c.reshape(1, -1)).sum(dim=1)
    return w.sum(dim=(1, 2, 3)) * c


def _add_bias(model: MobileNetV2, name: str, delta: torch.Tensor) -> None:
    layer: nn.Module = model.classifier if name == CLASSIFIER else conv_of(model, name)
    bias = layer.bias
    if not isinstance(bias, torch.Tensor):
        raise ValueError(f"{name} has no bias; fold batch norm first")
    with torch.no_grad():
        bias.add_(delta)


def absorb_high_bias(
    model: MobileNetV2,
    stats: dict[str, PreActivation],
    n_sigma: float = 3.0,
    padded: bool = True,
) -> dict[str, float]:
    """High-bias absorption over every ReLU pair, in place; returns the largest ``c`` per pair.

    ``relu(x - c) = relu(x) - c`` wherever ``x >= c``, and the next layer is linear, so its bias
    absorbs ``W c``. The identity is exact for 1x1 convolutions and the pooled classifier; for a
    zero-padded 3x3 second layer the border pixels differ (``padded=False`` skips such pairs).
    """
    n = field_size(model)
    absorbed: dict[str, float] = {}
    for pair in relu_pairs(model):
        if not padded and pair.second != CLASSIFIER and any(conv_of(model, pair.second).padding):
            continue
        c = high_bias(stats[pair.first], n, n_sigma)
        if not bool((c > 0).any()):
            continue
        _add_bias(model, pair.second, _absorbed_bias(model, pair.second, c))
        _add_bias(model, pair.first, -c)
        stats[pair.first] = PreActivation(stats[pair.first].mean - c, stats[pair.first].std)
        absorbed[f"{pair.first}->{pair.second}"] = float(c.max())
    return absorbed


def relu_mean(stats: PreActivation) -> torch.Tensor:
    """E[relu(x)] for x ~ N(mean, std^2), per channel (the clipped-normal mean)."""
    mu, sd = stats.mean.double(), stats.std.double().clamp(min=1e-12)
    z = mu / sd
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return (mu * cdf + sd * pdf).float()


def input_means(model: MobileNetV2, stats: Mapping[str, PreActivation]) -> dict[str, torch.Tensor]:
    """Expected input of every conv unit, per input channel, from the BN models alone.

    The stem sees normalised patches (mean ~0); after a ReLU unit the input mean is the clipped-
    normal mean; a block without ReLU output feeds the residual stream, whose mean adds up.
    """
    means: dict[str, torch.Tensor] = {"stem": torch.zeros(conv_of(model, "stem").in_channels)}
    stream = relu_mean(stats["stem"])
    for i, block in enumerate(blocks_of(model)):
        x = stream
        block_in = stream
        for j in range(_n_units(block)):
            name = f"blocks.{i}.units.{j}"
            means[name] = x
            x = relu_mean(stats[name]) if has_relu(model, name) else stats[name].mean
        stream = block_in + x if block.residual else x
    means["last"] = stream
    return means


def iter_convs(model: MobileNetV2) -> Iterator[tuple[str, nn.Conv2d]]:
    """(unit name, conv) for every conv unit."""
    for name in unit_names(model):
        yield name, conv_of(model, name)


@torch.no_grad()
def correct_bias(
    model: MobileNetV2,
    stats: Mapping[str, PreActivation],
    quantized_weights: Mapping[str, torch.Tensor],
) -> dict[str, float]:
    """Analytic bias correction (Nagel et al. section 4.2), in place on a BN-folded net.

    For each unit with quantized weights ``W_q``, the output's expected error is
    ``(W_q - W) E[x]``; it is subtracted from the bias. ``quantized_weights`` maps a unit name to
    its dequantized weight (as the INT8 model will use it). Returns the largest correction per unit.
    """
    means = input_means(model, stats)
    done: dict[str, float] = {}
    for name, conv in iter_convs(model):
        if name not in quantized_weights or conv.bias is None:
            continue
        err = quantized_weights[name].to(conv.weight.dtype) - conv.weight
        ex = means[name]
        if conv.groups == 1:
            delta = (err.sum(dim=(2, 3)) * ex.reshape(1, -1)).sum(dim=1)
        else:
            delta = err.sum(dim=(1, 2, 3)) * ex
        conv.bias.sub_(delta)
        done[name] = float(delta.abs().max())
    return done


def weight_range_ratio(model: MobileNetV2) -> dict[str, float]:
    """Per conv: max over channels / median over channels of max |w| (how badly a per-tensor
    quantizer fits it; 1 is ideal)."""
    out: dict[str, float] = {}
    for name, conv in iter_convs(model):
        r = conv.weight.detach().abs().flatten(1).amax(dim=1)
        med = float(r.median())
        out[name] = float(r.max()) / med if med > 0 else math.inf
    return out
