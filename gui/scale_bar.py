"""Pure maths for the scale bar and the magnification readout."""

from __future__ import annotations

import math

_STEPS = (1.0, 2.0, 5.0)


def nice_length_um(um_per_screen_px: float, target_px: float = 120.0) -> float:
    """The 1-2-5 series length (µm) whose bar is closest to, and no longer than, ``target_px``."""
    if not (math.isfinite(um_per_screen_px) and um_per_screen_px > 0):
        raise ValueError(f"µm per pixel must be positive, got {um_per_screen_px}")
    raw = um_per_screen_px * target_px
    exponent = math.floor(math.log10(raw))
    best = 10.0 ** (exponent - 1) * 5
    for power in (exponent - 1, exponent):
        for step in _STEPS:
            length = step * 10.0**power
            if length <= raw * (1 + 1e-9):
                best = max(best, length)
    return best


def format_length(um: float) -> str:
    """``250 µm``, ``1 mm``, ``0.5 µm``: µm below a millimetre, mm from there."""
    if um >= 1000:
        mm = um / 1000
        return f"{mm:g} mm"
    return f"{um:g} µm"


def scale_bar(um_per_screen_px: float, target_px: float = 120.0) -> tuple[float, str]:
    """Bar length in screen pixels and its label."""
    um = nice_length_um(um_per_screen_px, target_px)
    return um / um_per_screen_px, format_length(um)


def magnification(zoom: float, mpp: float | None, objective_power: float | None) -> float | None:
    """The apparent objective magnification on screen (``zoom`` = screen px per level-0 px).

    From the scan's objective when known, else from µm/px (10x is about 1 µm/px); None if neither.
    """
    if objective_power:
        return objective_power * zoom
    if mpp:
        return 10.0 / mpp * zoom
    return None


def format_magnification(mag: float | None, zoom: float) -> str:
    if mag is None:
        return f"{zoom * 100:.0f} %"
    return f"{mag:.1f}×" if mag < 10 else f"{mag:.0f}×"
