"""Whole-slide access: one small interface, an OpenSlide reader, and a numpy-backed twin.

Coordinates are named by plane: ``l0_`` level-0 pixels, ``lvl_`` pixels of a pyramid level.
Every reader returns RGB uint8 arrays (H x W x 3); transparent (unscanned) pixels become white.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.errors import (
    MissingMppError,
    Remedy,
    SlideNotFoundError,
    SlideReadError,
    UnsupportedSlideError,
)

log = logging.getLogger(__name__)

# The one list of slide files (folder discovery, the app's Open dialog): what OpenSlide reads (a
# folder of .dcm files is one DICOM slide) and what Pillow reads as a plain image.
OPENSLIDE_SUFFIXES = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"}
)
PLAIN_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
SLIDE_SUFFIXES = OPENSLIDE_SUFFIXES | PLAIN_IMAGE_SUFFIXES
# µm/px outside this range is not a microscope scan (e.g. a 72 dpi default in an image header).
PLAUSIBLE_MPP = (0.05, 50.0)
THUMB_BAND_PIXELS = 1 << 24  # level pixels read at once for a thumbnail: 64 MiB as RGBA
# ``mpp_source`` of a µm/px given by the user for this slide, and of a fallback for files without one.
MPP_OVERRIDE = "user"
MPP_DEFAULT = "default"


class Slide(ABC):
    """A pyramidal image with a physical pixel size."""

    path: Path | None
    name: str
    vendor: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    mpp_source: str
    file_mpp: float | None = None  # what the file itself records, whatever overrides it
    objective_power: float | None
    properties: Mapping[str, str]

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return ()

    def associated_image(self, name: str) -> Image.Image:
        """A label, macro or thumbnail image stored in the file."""
        raise KeyError(name)

    @abstractmethod
    def read_region(self, l0_xy: tuple[int, int], level: int, lvl_size: tuple[int, int]) -> NDArray[np.uint8]:
        """RGB pixels of ``lvl_size`` (w, h) at ``level``, top-left at level-0 ``l0_xy``."""

    @property
    def mpp_origin(self) -> str:
        """Where the µm/px in use comes from: ``file``, ``override``, ``default`` or ``none``."""
        if self.mpp is None:
            return "none"
        return {MPP_OVERRIDE: "override", MPP_DEFAULT: "default"}.get(self.mpp_source, "file")

    def _set_file_mpp(self, mpp: float | None, source: str) -> None:
        """Record the µm/px the file itself gives (None: it gives none)."""
        self.mpp = self.file_mpp = mpp
        self.mpp_source = source if mpp is not None else "none"

    def with_mpp(self, mpp: float) -> Slide:
        """Set the µm/px by hand, overriding the file's."""
        self.mpp = _checked_mpp(mpp)
        self.mpp_source = MPP_OVERRIDE
        return self

    def with_default_mpp(self, mpp: float) -> Slide:
        """Use ``mpp`` only if the slide has no µm/px of its own."""
        checked = _checked_mpp(mpp)
        if self.mpp is None:
            self.mpp, self.mpp_source = checked, MPP_DEFAULT
        return self

    def require_mpp(self) -> float:
        if self.mpp is None:
            raise MissingMppError(f"{self.name}: the slide does not record its µm/px")
        return self.mpp

    def best_level_for_downsample(self, downsample: float) -> int:
        """The most downsampled level that is still at least as detailed as ``downsample``."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample + 1e-9:
                best = level
        return best

    def thumbnail(self, max_side_px: int) -> tuple[NDArray[np.uint8], float]:
        """The whole slide shrunk so its longer side is at most ``max_side_px``.

        Returns the RGB array and its downsample (level-0 px per thumbnail px): exact along the
        longer side, within half a thumbnail pixel along the shorter, however narrow the slide.
        A level much larger than the thumbnail (a slide without a coarse level) is read and
        shrunk in bands of at most :data:`THUMB_BAND_PIXELS`, never whole.
        """
        l0_w, l0_h = self.dimensions
        downsample = max(1.0, max(l0_w, l0_h) / max_side_px)
        level = self.best_level_for_downsample(downsample)
        lvl_w, lvl_h = self.level_dimensions[level]
        out_w = max(1, round(l0_w / downsample))
        out_h = max(1, round(l0_h / downsample))
        if (out_w, out_h) == (lvl_w, lvl_h):
            return self.read_region((0, 0), level, (lvl_w, lvl_h)), downsample
        rows_per_out = lvl_h / out_h  # level rows behind one thumbnail row
        band_rows = max(1, int(THUMB_BAND_PIXELS // (lvl_w * max(1.0, rows_per_out))))
        lvl_ds = self.level_downsamples[level]
        bands = []
        for r0 in range(0, out_h, band_rows):
            r1 = min(out_h, r0 + band_rows)
            top, bottom = r0 * rows_per_out, r1 * rows_per_out
            y0, y1 = math.floor(top), min(lvl_h, math.ceil(bottom))
            pixels = self.read_region((0, round(y0 * lvl_ds)), level, (lvl_w, y1 - y0))
            box = (0.0, top - y0, float(lvl_w), bottom - y0)  # the band's exact share of the level
            img = Image.fromarray(pixels).resize((out_w, r1 - r0), Image.Resampling.BOX, box=box)
            bands.append(np.asarray(img))
        return np.concatenate(bands), downsample

    def close(self) -> None:  # noqa: B027 - only file-backed slides hold anything
        """Release the file."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Facts for reports and the ``info`` command."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(d, 4) for d in self.level_downsamples],
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "mpp_origin": self.mpp_origin,
            "file_mpp": self.file_mpp,
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_image_names),
        }


class ArraySlide(Slide):
    """A slide held in memory: the numpy twin used by tests and for plain images."""

    def __init__(
        self,
        pixels: NDArray[np.uint8],
        mpp: float | None,
        name: str = "array",
        path: Path | None = None,
        vendor: str = "array",
        downsamples: Sequence[int] = (1, 4, 16),
    ) -> None:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError("pixels must be an H x W x 3 uint8 array")
        self.path = path
        self.name = name
        self.vendor = vendor
        self._set_file_mpp(mpp, "given")
        self.objective_power = None
        self.properties = {}
        base = Image.fromarray(pixels)
        self._levels: list[NDArray[np.uint8]] = [pixels]
        dims = [(pixels.shape[1], pixels.shape[0])]
        dss = [1.0]
        for ds in downsamples[1:]:
            w, h = pixels.shape[1] // ds, pixels.shape[0] // ds
            if min(w, h) < 1:
                break
            self._levels.append(np.asarray(base.resize((w, h), Image.Resampling.BOX)))
            dims.append((w, h))
            dss.append(pixels.shape[1] / w)
        self.level_dimensions = tuple(dims)
        self.level_downsamples = tuple(dss)

    def read_region(self, l0_xy: tuple[int, int], level: int, lvl_size: tuple[int, int]) -> NDArray[np.uint8]:
        ds = self.level_downsamples[level]
        src = self._levels[level]
        lvl_x, lvl_y = round(l0_xy[0] / ds), round(l0_xy[1] / ds)
        w, h = lvl_size
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        x0, y0 = max(lvl_x, 0), max(lvl_y, 0)
        x1, y1 = min(lvl_x + w, src.shape[1]), min(lvl_y + h, src.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - lvl_y : y1 - lvl_y, x0 - lvl_x : x1 - lvl_x] = src[y0:y1, x0:x1]
        return out


class OpenSlideSlide(Slide):
    """Any format OpenSlide reads (Aperio, Hamamatsu, MIRAX, DICOM, generic tiled TIFF, ...)."""

    def __init__(self, path: Path) -> None:
        import openslide

        self._openslide = openslide
        try:
            self._osr = openslide.OpenSlide(str(path))
            props = dict(self._osr.properties)
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise UnsupportedSlideError(_unsupported_message(path)) from exc
        except openslide.OpenSlideError as exc:
            raise SlideReadError(
                f"{path.name}: OpenSlide recognised the file but cannot read it ({exc}): "
                "the file is damaged or uses an unsupported compression"
            ) from exc
        self.path = path
        self.name = slide_name(path)
        # Reads in flight; close() waits for them. After a failed read OpenSlide's handle stays
        # in its error state, so later reads fail at once with the first error.
        self._guard = threading.Condition()
        self._reading = 0
        self._closed = False
        self._broken: str | None = None
        self.vendor = props.get("openslide.vendor", "unknown")
        self.properties = props
        self.level_dimensions = tuple(tuple(d) for d in self._osr.level_dimensions)  # type: ignore[misc]
        self.level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
        self._set_file_mpp(*_mpp_from_properties(props))
        power = props.get("openslide.objective-power")
        self.objective_power = _to_float(power)

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._osr.associated_images.keys())

    def associated_image(self, name: str) -> Image.Image:
        try:
            return self._osr.associated_images[name].convert("RGB")
        except self._openslide.OpenSlideError as exc:
            raise SlideReadError(f"{self.name}: cannot read its {name} image ({exc})") from exc

    def read_region(self, l0_xy: tuple[int, int], level: int, lvl_size: tuple[int, int]) -> NDArray[np.uint8]:
        with self._guard:
            if self._closed:
                raise SlideReadError(f"{self.name}: read after the slide was closed")
            if self._broken is not None:
                raise SlideReadError(self._broken)
            self._reading += 1
        try:
            rgba = self._osr.read_region(l0_xy, level, lvl_size)
        except self._openslide.OpenSlideError as exc:
            problem = (
                f"{self.name}: pixels at level-0 ({l0_xy[0]}, {l0_xy[1]}) cannot be read ({exc}): "
                "the file is damaged"
            )
            with self._guard:
                self._broken = self._broken or problem
            raise SlideReadError(problem) from exc
        finally:
            with self._guard:
                self._reading -= 1
                self._guard.notify_all()
        return rgba_to_rgb(np.asarray(rgba))

    def close(self) -> None:
        """Close the file once no read is in flight (closing under a reader crashes OpenSlide)."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            while self._reading:
                self._guard.wait()
        self._osr.close()


def thumbnail_downsample(dimensions: tuple[int, int], thumbnail: NDArray[np.uint8]) -> float:
    """Level-0 px per px of a thumbnail of a slide of ``dimensions``, as :meth:`Slide.thumbnail`
    returns it: the longer side's."""
    return max(dimensions) / max(1, int(thumbnail.shape[0]), int(thumbnail.shape[1]))


def rgba_to_rgb(rgba: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Composite non-premultiplied RGBA over white (glass), as a viewer shows it."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.uint16)
    rgb = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return rgb.astype(np.uint8)


def slide_name(path: Path) -> str:
    """A slide file's name: the file name without its extension (an input's human name is
    :func:`engine.identity.display_name`, its result folder :func:`engine.identity.results_name`)."""
    return path.stem if path.suffix else path.name


def _to_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _mpp_from_properties(props: Mapping[str, str]) -> tuple[float | None, str]:
    """µm/px from OpenSlide's properties, falling back to TIFF resolution tags."""
    mpp_x = _to_float(props.get("openslide.mpp-x"))
    mpp_y = _to_float(props.get("openslide.mpp-y"))
    if mpp_x and mpp_y and _plausible(mpp_x):
        return (mpp_x + mpp_y) / 2, "openslide"
    res = _to_float(props.get("tiff.XResolution"))
    unit = props.get("tiff.ResolutionUnit", "").lower()
    per_um = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
    if res and per_um:
        mpp = per_um / res
        if _plausible(mpp):
            return mpp, "tiff resolution"
    return None, "none"


def _plausible(mpp: float) -> bool:
    return PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]


def _checked_mpp(mpp: float) -> float:
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp}")
    return float(mpp)


def _unsupported_message(path: Path) -> str:
    return f"{path.name}: not a slide OpenSlide or Pillow can read (damaged, cut short, or another format)"


def _open_plain_image(path: Path) -> ArraySlide:
    try:
        # Pillow warns about damaged metadata (e.g. of a cut-short TIFF) on stderr; what matters
        # is whether the pixels can be read, which the error below says in one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                dpi = img.info.get("dpi")
                pixels = np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise UnsupportedSlideError(
            f"{path.name}: too large to read as a plain image", Remedy.CONVERT_TO_PYRAMID
        ) from exc
    except (OSError, ValueError) as exc:
        raise UnsupportedSlideError(_unsupported_message(path) + f" ({exc})") from exc
    slide = ArraySlide(pixels, None, name=slide_name(path), path=path, vendor="image")
    if dpi:
        dpi_mpp = 25400.0 / float(dpi[0]) if float(dpi[0]) > 0 else 0.0
        if _plausible(dpi_mpp):
            slide._set_file_mpp(dpi_mpp, "image dpi")
    return slide


def open_slide(path: str | Path, mpp: float | None = None, default_mpp: float | None = None) -> Slide:
    """Open a whole-slide file (OpenSlide) or a plain image (Pillow).

    ``mpp`` overrides the file's µm/px; ``default_mpp`` is used only if the file records none.
    """
    p = Path(path)
    if not p.exists():
        raise SlideNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise SlideNotFoundError(f"{p}: is a folder, not a slide file", Remedy.USE_SLIDE_FILE)
    import openslide

    vendor = openslide.OpenSlide.detect_format(str(p))
    slide: Slide
    if vendor is not None:
        slide = OpenSlideSlide(p)
    elif p.suffix.lower() in PLAIN_IMAGE_SUFFIXES:
        slide = _open_plain_image(p)
    else:
        raise UnsupportedSlideError(_unsupported_message(p))
    try:
        if mpp is not None:
            slide.with_mpp(mpp)
        elif default_mpp is not None:
            slide.with_default_mpp(default_mpp)
    except BaseException:
        slide.close()  # a bad µm/px must not leave the file open
        raise
    facts = (slide.vendor, slide.level_count, slide.mpp, slide.mpp_origin)
    log.debug("opened %s: %s, %s levels, mpp %s (%s)", p, *facts)
    return slide
