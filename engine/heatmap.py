"""Colour-mapped probability heatmaps and the thumbnail overlay with its legend."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from engine.tiling import TileGrid

# ColorBrewer RdYlBu reversed: blue (unlikely) -> pale yellow -> red (likely tumour).
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array(
    [[49, 54, 149], [116, 173, 209], [255, 255, 191], [244, 109, 67], [165, 0, 38]],
    dtype=np.float64,
)


def colour_lut() -> NDArray[np.uint8]:
    """256 x 3 colour table for probabilities 0..1."""
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


_LUT = colour_lut()


def colourise(probs: NDArray[np.float32], alpha: int = 255, fade_low: bool = False) -> NDArray[np.uint8]:
    """RGBA image of a probability grid; NaN (not analysed) is fully transparent.

    With ``fade_low`` the opacity grows with the probability (20% of ``alpha`` at 0), so unlikely
    tiles tint the tissue lightly and the suspicious ones stand out.
    """
    valid = np.isfinite(probs)
    p = np.clip(np.nan_to_num(probs, nan=0.0), 0.0, 1.0)
    idx = (p * 255 + 0.5).astype(np.uint8)
    rgba = np.zeros((*probs.shape, 4), dtype=np.uint8)
    rgba[..., :3] = _LUT[idx]
    weight = 0.2 + 0.8 * p if fade_low else np.ones_like(p)
    rgba[..., 3] = np.where(valid, np.round(alpha * weight), 0).astype(np.uint8)
    return rgba


def heatmap_image(probs: NDArray[np.float32], min_side_px: int = 512) -> tuple[Image.Image, int]:
    """The grid one cell per block of ``scale`` pixels (nearest), so it is readable as a picture."""
    scale = max(1, -(-min_side_px // max(1, max(probs.shape))))
    img = Image.fromarray(colourise(probs), "RGBA")
    return img.resize((probs.shape[1] * scale, probs.shape[0] * scale), Image.Resampling.NEAREST), scale


def overlay_image(
    thumbnail: NDArray[np.uint8],
    thumb_downsample: float,
    grid: TileGrid,
    probs: NDArray[np.float32],
    opacity: float = 0.6,
    caption: str = "",
    threshold: float | None = None,
) -> Image.Image:
    """The thumbnail with the heatmap laid over each tile's stride cell, a legend and a caption.

    Cells below ``threshold`` (when given) are left uncoloured.
    """
    base = Image.fromarray(thumbnail).convert("RGBA")
    shown = probs if threshold is None else np.where(probs >= threshold, probs, np.nan)
    heat = Image.fromarray(colourise(shown, alpha=round(255 * opacity), fade_low=True), "RGBA")
    off_x, off_y = grid.l0_cell_corner(0, 0)
    end_x, end_y = grid.l0_cell_corner(grid.t_cols, grid.t_rows)
    box = (
        round(off_x / thumb_downsample),
        round(off_y / thumb_downsample),
        round(end_x / thumb_downsample),
        round(end_y / thumb_downsample),
    )
    size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(heat.resize(size, Image.Resampling.NEAREST), box[:2])
    composed = Image.alpha_composite(base, layer).convert("RGB")
    return _with_legend(composed, caption)


def _with_legend(img: Image.Image, caption: str) -> Image.Image:
    font = _font(14)
    bar_w, pad = 256, 10
    legend_h = 64 + (22 if caption else 0)
    caption_w = round(draw_width(caption, font)) + 2 * pad if caption else 0
    width = max(img.width, bar_w + 2 * pad + 160, caption_w)
    out = Image.new("RGB", (width, img.height + legend_h), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    y = img.height + pad
    bar = Image.fromarray(np.repeat(_LUT[None, :, :], 14, axis=0), "RGB")
    out.paste(bar, (pad, y))
    draw.rectangle((pad - 1, y - 1, pad + bar_w, y + 14), outline="black")
    for frac, label in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        x = pad + round(frac * (bar_w - 1))
        draw.line((x, y + 14, x, y + 18), fill="black")
        draw.text((x, y + 19), label, fill="black", font=font, anchor="ma")
    draw.text((pad + bar_w + 12, y), "tumour probability", fill="black", font=font)
    if caption:
        draw.text((pad, y + 44), caption, fill="black", font=font)
    return out


def draw_width(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> float:
    return float(font.getlength(text))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()
