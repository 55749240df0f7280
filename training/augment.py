"""Patch augmentation on uint8 RGB arrays (N x S x S x 3), before the engine's normalisation.

Working on uint8 keeps one preprocessing path: augmented patches go through
``engine.preprocess.normalise`` exactly like the patches the engine reads from a slide.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from engine.preprocess import fit_patches


def d4(patch: NDArray[np.uint8], element: int) -> NDArray[np.uint8]:
    """Element 0..7 of the square's symmetry group: rot90^(e % 4), then a left-right flip if e >= 4."""
    out = np.rot90(patch, k=element % 4, axes=(0, 1))
    if element >= 4:
        out = out[:, ::-1]
    return out


def random_d4(patches: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """Each patch transformed by a uniformly drawn element of D4."""
    elements = rng.integers(0, 8, size=len(patches))
    return np.stack([d4(p, int(e)) for p, e in zip(patches, elements, strict=True)])


def rotate(patch: NDArray[np.uint8], angle_deg: float) -> NDArray[np.uint8]:
    """Rotate counter-clockwise about the centre pixel with bilinear interpolation (corners black).

    For odd sizes, multiples of 90 degrees match ``np.rot90`` exactly.
    """
    img = Image.fromarray(np.ascontiguousarray(patch))
    out = img.rotate(angle_deg, resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def random_rotate(patches: NDArray[np.uint8], rng: np.random.Generator, max_deg: float) -> NDArray[np.uint8]:
    """Each patch rotated by an angle drawn uniformly from [-max_deg, max_deg]."""
    angles = rng.uniform(-max_deg, max_deg, size=len(patches))
    return np.stack([rotate(p, float(a)) for p, a in zip(patches, angles, strict=True)])


def colour_jitter(patches: NDArray[np.uint8], rng: np.random.Generator, strength: float) -> NDArray[np.uint8]:
    """Stain/colour jitter: per-channel gain and offset, brightness, contrast and saturation.

    ``strength`` scales every perturbation (0 = identity; 1 = gains of +-10%, offsets of +-0.05).
    """
    n = len(patches)
    x = patches.astype(np.float32) / 255.0
    gain = 1.0 + strength * rng.uniform(-0.1, 0.1, size=(n, 1, 1, 3))
    offset = strength * rng.uniform(-0.05, 0.05, size=(n, 1, 1, 3))
    x = x * gain + offset
    grey = x.mean(axis=3, keepdims=True)
    saturation = 1.0 + strength * rng.uniform(-0.2, 0.2, size=(n, 1, 1, 1))
    x = grey + (x - grey) * saturation
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    contrast = 1.0 + strength * rng.uniform(-0.2, 0.2, size=(n, 1, 1, 1))
    x = mean + (x - mean) * contrast
    out: NDArray[np.uint8] = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return out


# Colour deconvolution of H&E-DAB (Ruifrok & Johnston 2001), rows: the optical density of one stain.
_STAIN_OD = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
RGB_FROM_HED: NDArray[np.float64] = (_STAIN_OD / np.linalg.norm(_STAIN_OD, axis=1, keepdims=True)).astype(
    np.float64
)
HED_FROM_RGB: NDArray[np.float64] = np.linalg.inv(RGB_FROM_HED).astype(np.float64)
_MIN_INTENSITY = 1.0 / 255.0


def hed_jitter(
    patches: NDArray[np.uint8], rng: np.random.Generator, scale_sigma: float, shift_sigma: float
) -> NDArray[np.uint8]:
    """Stain jitter in HED space (Tellez et al. 2019): each stain's optical density ``s`` becomes
    ``s * a + b`` with ``a ~ U(1 +- scale_sigma)``, ``b ~ U(+- shift_sigma)`` per patch and stain."""
    n = len(patches)
    x = np.maximum(patches.astype(np.float32) / 255.0, _MIN_INTENSITY)
    stains = -np.log(x) @ HED_FROM_RGB.astype(np.float32)
    a = rng.uniform(1 - scale_sigma, 1 + scale_sigma, size=(n, 1, 1, 3)).astype(np.float32)
    b = rng.uniform(-shift_sigma, shift_sigma, size=(n, 1, 1, 3)).astype(np.float32)
    od = (stains * a + b) @ RGB_FROM_HED.astype(np.float32)
    out: NDArray[np.uint8] = np.clip(np.rint(np.exp(-od) * 255.0), 0, 255).astype(np.uint8)
    return out


def seam_composites(
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    pool_images: NDArray[np.uint8],
    pool_labels: NDArray[np.int64],
    p: float,
    rng: np.random.Generator,
) -> NDArray[np.uint8]:
    """With probability ``p`` per patch, replace it by a tile cut across four patches of its label.

    Each quarter is the facing corner of a different ``pool_images`` patch of the same label: what
    a tile holds when the tile grid does not line up with a mosaic's cells. The sharp seams
    between the quarters carry no label, so a model trained on them learns not to read seams as
    tumour. Labels are unchanged (a label-1 composite holds the corners of four tumour patches,
    whose centres were labelled: a noisier positive). With ``p`` 0 nothing is drawn from ``rng``.
    """
    if p <= 0:
        return images
    out = images.copy()
    for i in np.flatnonzero(rng.random(len(images)) < p):
        pool = np.flatnonzero(pool_labels == labels[i])
        a, b, c, d = pool_images[rng.choice(pool, 4)]
        out[i] = facing_corners(a, b, c, d, size=(images.shape[1], images.shape[2]))
    return out


def facing_corners(
    a: NDArray[np.uint8],
    b: NDArray[np.uint8],
    c: NDArray[np.uint8],
    d: NDArray[np.uint8],
    size: tuple[int, int],
) -> NDArray[np.uint8]:
    """A ``size`` tile cut across four patches laid out 2 x 2: top-left gets ``a``'s bottom-right
    corner, top-right ``b``'s bottom-left, bottom-left ``c``'s top-right, bottom-right ``d``'s
    top-left (each patch at least half the tile on a side)."""
    h, w = size
    hy, hx = h // 2, w // 2
    out = np.empty((h, w, a.shape[2]), a.dtype)
    out[:hy, :hx] = a[a.shape[0] - hy :, a.shape[1] - hx :]
    out[:hy, hx:] = b[b.shape[0] - hy :, : w - hx]
    out[hy:, :hx] = c[: h - hy, c.shape[1] - hx :]
    out[hy:, hx:] = d[: h - hy, : w - hx]
    return out


def shifted_pair(
    views: NDArray[np.uint8], size_px: int, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Two ``size_px`` crops of each view, one pixel apart (across, down or diagonally).

    The first crop sits at a uniformly drawn integral position, the second at a uniformly drawn
    neighbouring one: what the model sees when the tile grid moves by a pixel. Views must be
    larger than ``size_px`` on both sides.
    """
    n, h, w, _ = views.shape
    if h <= size_px or w <= size_px:
        raise ValueError(f"views of {h} x {w} px leave no room to move a {size_px} px crop")
    first = np.empty((n, size_px, size_px, views.shape[3]), views.dtype)
    second = np.empty_like(first)
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    for i in range(n):
        y0, x0 = int(rng.integers(0, h - size_px + 1)), int(rng.integers(0, w - size_px + 1))
        legal = [(y0 + dy, x0 + dx) for dy, dx in moves]
        legal = [(y, x) for y, x in legal if 0 <= y <= h - size_px and 0 <= x <= w - size_px]
        y1, x1 = legal[int(rng.integers(0, len(legal)))]
        first[i] = views[i, y0 : y0 + size_px, x0 : x0 + size_px]
        second[i] = views[i, y1 : y1 + size_px, x1 : x1 + size_px]
    return first, second


def resample_view(
    patch: NDArray[np.uint8], size_px: int, centre: tuple[float, float], zoom: float
) -> NDArray[np.uint8]:
    """The ``size_px`` view of ``patch`` centred at ``centre`` (x, y in pixel units, the patch's
    centre is ``((w - 1) / 2, (h - 1) / 2)``) magnified by ``zoom``, resampled as the engine does
    (bilinear, antialiased when shrinking); beyond the patch the image is mirrored."""
    pad = int(np.ceil(size_px / zoom / 2 + 2 - min(patch.shape[:2]) / 2))
    pad = max(pad, 0)
    src = np.pad(patch, ((pad, pad), (pad, pad), (0, 0)), mode="reflect") if pad else patch
    half = size_px / zoom / 2
    cx, cy = centre[0] + pad + 0.5, centre[1] + pad + 0.5  # pixel centres -> PIL's edge coordinates
    img = Image.fromarray(np.ascontiguousarray(src))
    box = (cx - half, cy - half, cx + half, cy + half)
    return np.asarray(img.resize((size_px, size_px), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)


def blur(patch: NDArray[np.uint8], sigma: float) -> NDArray[np.uint8]:
    """Gaussian blur with standard deviation ``sigma`` px."""
    img = Image.fromarray(np.ascontiguousarray(patch)).filter(ImageFilter.GaussianBlur(radius=sigma))
    return np.asarray(img, dtype=np.uint8)


def jpeg(patch: NDArray[np.uint8], quality: int) -> NDArray[np.uint8]:
    """Re-encode as JPEG at ``quality`` (4:2:0, as scanners store tiles) and decode."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(patch)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class Augment:
    """What a slide does to a patch, drawn per patch; the defaults are off (D4 only).

    ``shift``: crop the model's field of view anywhere in the patch (PCam's 96 px give 2 x 2 integral
    positions); ``scale``: zoom by up to ``1 +- scale`` (probability ``scale_p``) through the engine's
    resampling; ``blur_p``/``blur_sigma``: Gaussian blur of up to ``blur_sigma`` px; ``jpeg_p``/
    ``jpeg_quality``: re-encoding at a quality drawn from the range; ``hed``: stain jitter strength;
    ``jitter``: per-channel gain/offset, brightness, contrast, saturation; ``rotate_deg``: any angle.
    """

    shift: bool = False
    scale: float = 0.0
    scale_p: float = 0.5
    blur_p: float = 0.0
    blur_sigma: float = 1.2
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    hed: float = 0.0
    jitter: float = 0.0
    rotate_deg: float = 0.0

    def apply(self, patches: NDArray[np.uint8], size_px: int, rng: np.random.Generator) -> NDArray[np.uint8]:
        """N x H x W x 3 raw patches (H, W >= size_px) -> N x size_px x size_px x 3 augmented."""
        n, h, w, _ = patches.shape
        out = np.empty((n, size_px, size_px, 3), dtype=np.uint8)
        for i in range(n):
            p = patches[i]
            zoom = 1.0
            if self.scale > 0 and rng.random() < self.scale_p:
                zoom = float(np.exp(rng.uniform(np.log(1 - self.scale), np.log(1 + self.scale))))
            if zoom != 1.0:
                centre = ((w - 1) / 2 + rng.uniform(-0.5, 0.5), (h - 1) / 2 + rng.uniform(-0.5, 0.5))
                view = resample_view(p, size_px, centre, zoom)
            elif self.shift:
                y0, x0 = int(rng.integers(0, h - size_px + 1)), int(rng.integers(0, w - size_px + 1))
                view = p[y0 : y0 + size_px, x0 : x0 + size_px]
            else:
                view = fit_patches(p[None], size_px)[0]
            if self.blur_p > 0 and rng.random() < self.blur_p:
                view = blur(view, float(rng.uniform(0.3, self.blur_sigma)))
            if self.jpeg_p > 0 and rng.random() < self.jpeg_p:
                view = jpeg(view, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
            out[i] = view
        if self.hed > 0:
            out = hed_jitter(out, rng, self.hed, self.hed / 2.5)
        if self.jitter > 0:
            out = colour_jitter(out, rng, self.jitter)
        if self.rotate_deg > 0:
            out = random_rotate(out, rng, self.rotate_deg)
        return random_d4(out, rng)
