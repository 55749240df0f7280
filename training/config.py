"""Architecture configuration and the layer plan shared by the conventional and equivariant nets.

Both networks are built from the same plan, so they have the same channels, filter sizes, strides
and paddings by construction. Every feature map stays odd-sized with a centred sampling grid, which
is what keeps 90-degree rotations exact through stride-2 layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# (expansion t, channels c, repeats n, stride s) of MobileNetV2 (Sandler et al. 2018, table 2).
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# The five stride-2 layers: stem, first block of the 24-, 32-, 64- and 160-channel stages.
N_STRIDED = 5
PAPER_STRIDES = (True, True, True, False, False)


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to a multiple of ``divisor`` (torchvision's rule: never below 90%)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_output_size(size_px: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial output size of a convolution."""
    return (size_px + 2 * padding - kernel) // stride + 1


def centred_padding(size_px: int, kernel: int, stride: int) -> int:
    """Padding that keeps an odd map odd with its sampling grid centred on the centre pixel.

    Stride 1 uses 'same' padding. Stride 2 needs ``size + 2p - k`` divisible by 4 so that the output
    is odd and its centre sample lands on the input's centre pixel.
    """
    if size_px % 2 == 0:
        raise ValueError(f"feature map of {size_px} px is even; rot90 equivariance needs odd sizes")
    if stride == 1:
        return (kernel - 1) // 2
    if stride != 2:
        raise ValueError(f"only strides 1 and 2 are supported, got {stride}")
    for pad in range(kernel):
        if (size_px + 2 * pad - kernel) % 4 == 0 and size_px + 2 * pad >= kernel:
            return pad
    raise ValueError(f"no centred padding for size {size_px}, kernel {kernel}")


BLUR_KERNEL = 3  # the default anti-aliasing low-pass: binomial [1, 2, 1] x [1, 2, 1] / 16


@dataclass(frozen=True)
class ArchConfig:
    """What defines a network: architecture, symmetry group order, width and which strides stay."""

    arch: str = "equivariant"
    group_order: int = 8
    width: float = 0.5
    strides: tuple[bool, ...] = PAPER_STRIDES
    input_size: int = 95
    num_classes: int = 2
    scale_last: bool = False
    dropout: float = 0.2
    antialias: bool = False
    blur_kernel: int = BLUR_KERNEL  # binomial low-pass size of the anti-aliasing (3, 5 or 7)
    expansion: int = 6  # hidden/input channels of the inverted residuals (MobileNetV2: 6)

    def __post_init__(self) -> None:
        if self.arch not in ("conventional", "equivariant"):
            raise ValueError(f"arch must be 'conventional' or 'equivariant', got {self.arch!r}")
        if len(self.strides) != N_STRIDED:
            raise ValueError(f"strides needs {N_STRIDED} flags, got {len(self.strides)}")
        if self.group_order < 1 or (self.arch == "equivariant" and self.group_order < 2):
            raise ValueError(f"group order must be >= 2 (C_N), got {self.group_order}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if self.blur_kernel not in (3, 5, 7):
            raise ValueError(f"blur kernel must be 3, 5 or 7, got {self.blur_kernel}")
        if self.expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {self.expansion}")

    @property
    def divisor(self) -> int:
        """Channel counts are multiples of lcm(8, N), so N-channel fields tile them.

        The conventional net uses the same rounding for the same ``group_order``, so both nets of a
        comparison have identical channel counts (8 for N = 4 or 8, 24 for N = 12).
        """
        return math.lcm(8, self.group_order)

    @property
    def group_name(self) -> str:
        """``C8`` etc., or ``none`` for the conventional net."""
        return f"C{self.group_order}" if self.arch == "equivariant" else "none"

    @property
    def pool_order(self) -> int:
        """Channels per field pooled before the classifier: N for the equivariant net, else 1."""
        return self.group_order if self.arch == "equivariant" else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in checkpoints)."""
        data = asdict(self)
        data["strides"] = list(self.strides)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["strides"] = tuple(bool(s) for s in data["strides"])
        return cls(**data)  # older checkpoints get the defaults of newer fields (no blur, blur 3, t = 6)

    def strides_text(self) -> str:
        """The stride flags as a bit string, e.g. ``11100``."""
        return "".join("1" if s else "0" for s in self.strides)


@dataclass(frozen=True)
class ConvSpec:
    """One convolution + batch norm (+ ReLU) unit, optionally followed by a stride-2 blur.

    With ``blur_padding`` set, the unit is anti-aliased (Zhang 2019): the convolution runs at
    stride 1 and a fixed binomial low-pass with stride 2 (padding ``blur_padding``) subsamples
    after the ReLU. The blur kernel has the square's symmetry, so rot90 stays exact.
    """

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    depthwise: bool
    relu: bool
    size_in: int
    size_out: int
    blur_padding: int | None = None
    blur_kernel: int = BLUR_KERNEL

    @property
    def size_conv(self) -> int:
        """Spatial size of the convolution's own output (before any blur)."""
        return conv_output_size(self.size_in, self.kernel, self.stride, self.padding)


@dataclass(frozen=True)
class BlockSpec:
    """An inverted residual block: its units and whether it adds its input."""

    units: tuple[ConvSpec, ...]
    residual: bool


@dataclass(frozen=True)
class Plan:
    """The whole feature extractor: stem, blocks, last 1x1 conv, and the final map size."""

    stem: ConvSpec
    blocks: tuple[BlockSpec, ...]
    last: ConvSpec
    final_size: int = field(default=0)


def _conv(
    cin: int,
    cout: int,
    k: int,
    stride: int,
    size: int,
    *,
    dw: bool,
    relu: bool,
    antialias: bool = False,
    blur: int = BLUR_KERNEL,
) -> ConvSpec:
    if antialias and stride == 2:
        # every blur size samples the grid of the 3-tap blur: same centre, same output size
        blur_pad = centred_padding(size, BLUR_KERNEL, 2) + (blur - BLUR_KERNEL) // 2
        out = conv_output_size(size, blur, 2, blur_pad)
        return ConvSpec(cin, cout, k, 1, centred_padding(size, k, 1), dw, relu, size, out, blur_pad, blur)
    pad = centred_padding(size, k, stride) if k > 1 else 0
    out = conv_output_size(size, k, stride, pad)
    return ConvSpec(cin, cout, k, stride, pad, dw, relu, size, out)


def build_plan(cfg: ArchConfig) -> Plan:
    """Layer-by-layer plan of MobileNetV2 for ``cfg`` (channels, strides, paddings, map sizes)."""
    d = cfg.divisor
    strides = iter(cfg.strides)
    size = cfg.input_size
    cin = make_divisible(STEM_CHANNELS * cfg.width, d)
    aa = cfg.antialias
    bk = cfg.blur_kernel
    stem = _conv(3, cin, 3, 2 if next(strides) else 1, size, dw=False, relu=True, antialias=aa, blur=bk)
    size = stem.size_out
    blocks: list[BlockSpec] = []
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        cout = make_divisible(c * cfg.width, d)
        for i in range(n):
            stride = (2 if next(strides) else 1) if (i == 0 and s == 2) else 1
            hidden = cin * (cfg.expansion if t != 1 else 1)
            units: list[ConvSpec] = []
            if t != 1:
                units.append(_conv(cin, hidden, 1, 1, size, dw=False, relu=True))
            dw = _conv(hidden, hidden, 3, stride, size, dw=True, relu=True, antialias=aa, blur=bk)
            units.append(dw)
            units.append(_conv(hidden, cout, 1, 1, dw.size_out, dw=False, relu=False))
            blocks.append(BlockSpec(tuple(units), residual=stride == 1 and cin == cout))
            size = dw.size_out
            cin = cout
    last_ch = LAST_CHANNELS * (cfg.width if cfg.scale_last else max(1.0, cfg.width))
    last = _conv(cin, make_divisible(last_ch, d), 1, 1, size, dw=False, relu=True)
    return Plan(stem, tuple(blocks), last, final_size=size)


def plan_macs(plan: Plan, num_classes: int, pool_order: int) -> int:
    """Multiply-accumulates per patch of the plain network (convolutions and classifier)."""
    total = 0
    for u in (plan.stem, *(u for b in plan.blocks for u in b.units), plan.last):
        per_out = (1 if u.depthwise else u.in_channels) * u.kernel * u.kernel
        total += u.out_channels * u.size_conv * u.size_conv * per_out
        if u.blur_padding is not None:
            total += u.out_channels * u.size_out * u.size_out * u.blur_kernel * u.blur_kernel
    return total + plan.last.out_channels // pool_order * num_classes
