"""Colour-mapped probability heatmaps and the thumbnail overlay with its legend."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from engine.tiling import TileGrid

# Yellow -> orange -> red -> dark red (after ColorBrewer YlOrRd, lightness falling steadily):
# none of it is close to haematoxylin purple or eosin pink, and tiles below the display
# threshold are not coloured at all, so the tissue under them stays as it is.
_STOPS = np.array([0.0, 0.35, 0.7, 1.0])
_COLOURS = np.array(
    [[255, 230, 40], [253, 141, 60], [220, 20, 30], [110, 0, 20]],
    dtype=np.float64,
)


def colour_lut() -> NDArray[np.uint8]:
    """256 x 3 colour table from the display threshold (index 0) to probability 1 (index 255)."""
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


_LUT = colour_lut()


def lut_index(probs: NDArray[np.floating], floor: float) -> NDArray[np.uint8]:
    """Colour-table index of each probability when ``floor`` (the display threshold) is the low
    end of the map: ``floor`` -> 0, 1 -> 255."""
    span = max(1.0 - floor, 1e-6)
    p = np.clip((np.nan_to_num(probs, nan=0.0) - floor) / span, 0.0, 1.0)
    out: NDArray[np.uint8] = (p * 255 + 0.5).astype(np.uint8)
    return out


def colourise(probs: NDArray[np.float32], alpha: int = 255, floor: float = 0.5) -> NDArray[np.uint8]:
    """RGBA image of a probability grid: cells below ``floor`` and NaN (not analysed) are fully
    transparent, the rest coloured from yellow (at ``floor``) to dark red (1) with opacity
    ``alpha`` (255: solid)."""
    shown = np.isfinite(probs) & (np.nan_to_num(probs, nan=-1.0) >= floor)
    rgba = np.zeros((*probs.shape, 4), dtype=np.uint8)
    rgba[..., :3] = _LUT[lut_index(probs, floor)]
    rgba[..., 3] = np.where(shown, alpha, 0).astype(np.uint8)
    return rgba


def legend_bar(floor: float, width: int = 256) -> NDArray[np.uint8]:
    """One row (``width`` x 3) of the legend for probabilities 0..1: white below ``floor``."""
    x = np.linspace(0.0, 1.0, width)
    row = _LUT[lut_index(x, floor)].copy()
    row[x < floor] = 255
    return row


def heatmap_image(
    probs: NDArray[np.float32], min_side_px: int = 512, floor: float = 0.0
) -> tuple[Image.Image, int]:
    """The grid one cell per block of ``scale`` pixels (nearest), so it is readable as a picture."""
    scale = max(1, -(-min_side_px // max(1, max(probs.shape))))
    img = Image.fromarray(colourise(probs, floor=floor), "RGBA")
    return img.resize((probs.shape[1] * scale, probs.shape[0] * scale), Image.Resampling.NEAREST), scale


def overlay_image(
    thumbnail: NDArray[np.uint8],
    thumb_downsample: float,
    grid: TileGrid,
    probs: NDArray[np.float32],
    opacity: float = 0.8,
    caption: str = "",
    threshold: float = 0.5,
) -> Image.Image:
    """The thumbnail with the heatmap laid over each tile's stride cell, a legend and a caption.

    Cells below ``threshold`` are left uncoloured.
    """
    base = Image.fromarray(thumbnail).convert("RGBA")
    heat = Image.fromarray(colourise(probs, alpha=round(255 * opacity), floor=threshold), "RGBA")
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
    return _with_legend(composed, caption, threshold)


def _with_legend(img: Image.Image, caption: str, threshold: float) -> Image.Image:
    font = _font(14)
    bar_w, pad = 256, 10
    legend_h = 64 + (22 if caption else 0)
    caption_w = round(draw_width(caption, font)) + 2 * pad if caption else 0
    width = max(img.width, bar_w + 2 * pad + 160, caption_w)
    out = Image.new("RGB", (width, img.height + legend_h), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    y = img.height + pad
    bar = Image.fromarray(np.repeat(legend_bar(threshold, bar_w)[None, :, :], 14, axis=0), "RGB")
    out.paste(bar, (pad, y))
    draw.rectangle((pad - 1, y - 1, pad + bar_w, y + 14), outline="black")
    for frac, label in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        x = pad + round(frac * (bar_w - 1))
        draw.line((x, y + 14, x, y + 18), fill="black")
        draw.text((x, y + 19), label, fill="black", font=font, anchor="ma")
    draw.text((pad + bar_w + 12, y), "tumour probability", fill="black", font=font)
    if threshold > 0:
        draw.text((pad + bar_w + 12, y + 18), f"below {threshold:g} not coloured", fill="black", font=font)
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
