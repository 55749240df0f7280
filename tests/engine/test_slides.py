from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from engine.errors import MissingMppError, Remedy, SlideNotFoundError, SlideReadError, UnsupportedSlideError
from engine.slide import ArraySlide, open_slide, rgba_to_rgb


def test_aperio_slide(shared_data: Path) -> None:
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        assert slide.vendor == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.objective_power == 20
        assert {"label", "macro"} <= set(slide.associated_image_names)
        assert slide.associated_image("label").mode == "RGB"
        region = slide.read_region((1000, 1000), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        assert region.std() > 5  # real tissue, not blank


def test_dicom_slide_made_of_two_files(shared_data: Path) -> None:
    with open_slide(shared_data / "slides" / "boxes_0.dcm") as slide:
        assert slide.vendor == "dicom"
        assert slide.mpp is not None
        assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)


@pytest.mark.parametrize("name", ["tcga-cr-7395-01a-01-ts1.svs", "boxes_generic_tiled.tiff"])
def test_slides_without_mpp_ask_for_it(shared_data: Path, name: str) -> None:
    with open_slide(shared_data / "slides" / name) as slide:
        assert slide.mpp is None
        with pytest.raises(MissingMppError, match="µm/px") as info:
            slide.require_mpp()
        assert info.value.remedy is Remedy.SET_MPP
    with open_slide(shared_data / "slides" / name, mpp=0.25) as slide:
        assert slide.mpp == 0.25 and slide.mpp_source == "user" and slide.mpp_origin == "override"
    with open_slide(shared_data / "slides" / name, default_mpp=0.25) as slide:
        assert (slide.mpp, slide.mpp_origin, slide.file_mpp) == (0.25, "default", None)


def test_default_mpp_never_replaces_the_files_own(shared_data: Path) -> None:
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    with open_slide(path, default_mpp=0.25) as slide:
        assert slide.mpp == pytest.approx(0.499) and slide.mpp_origin == "file"
        facts = slide.describe()
        assert facts["mpp_origin"] == "file" and facts["file_mpp"] == pytest.approx(0.499)
    with open_slide(path, mpp=0.25, default_mpp=0.3) as slide:  # an override wins
        assert slide.mpp == 0.25 and slide.mpp_origin == "override"
        assert slide.file_mpp == pytest.approx(0.499)


def test_pyramid_levels_of_generic_tiff(shared_data: Path) -> None:
    with open_slide(shared_data / "slides" / "boxes_generic_tiled.tiff") as slide:
        assert slide.level_count == 4
        assert slide.best_level_for_downsample(2.5) == 1
        thumb, ds = slide.thumbnail(100)
        assert max(thumb.shape[:2]) == 100 and ds == pytest.approx(3.0)


def test_unrecognised_file(shared_data: Path) -> None:
    with pytest.raises(UnsupportedSlideError, match="not a slide"):
        open_slide(shared_data / "broken" / "broken_random_ascii.svs")


def test_unsupported_compression(shared_data: Path) -> None:
    with pytest.raises(SlideReadError, match="52479"):
        open_slide(shared_data / "broken" / "unopenable_bad_compression.tiff")


def test_file_that_fails_only_when_its_pixels_are_read(shared_data: Path) -> None:
    slide = open_slide(shared_data / "broken" / "unreadable_bogus_jpeg.svs")
    with pytest.raises(SlideReadError, match="damaged"):
        slide.read_region((0, 0), 0, (16, 16))


def test_missing_path_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SlideNotFoundError, match="no such file"):
        open_slide(tmp_path / "missing.svs")
    with pytest.raises(SlideNotFoundError, match="folder"):
        open_slide(tmp_path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UnsupportedSlideError):
        open_slide(path)


def test_plain_png_with_a_non_ascii_name(tmp_path: Path) -> None:
    path = tmp_path / "lymph_nœud_ü.png"
    Image.fromarray(np.full((300, 400, 3), 200, dtype=np.uint8)).save(path)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.vendor == "image"
        assert slide.dimensions == (400, 300)
        assert slide.mpp == 0.5
        assert slide.name == "lymph_nœud_ü"


def test_png_with_screen_dpi_has_no_mpp(tmp_path: Path) -> None:
    path = tmp_path / "screen.png"
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(path, dpi=(72, 72))
    assert open_slide(path).mpp is None


def test_array_slide_outside_the_image_is_glass() -> None:
    slide = ArraySlide(np.zeros((128, 128, 3), dtype=np.uint8), mpp=1.0)
    region = slide.read_region((118, 118), 0, (20, 20))
    assert (region[:10, :10] == 0).all() and (region[15:, 15:] == 255).all()
    assert slide.level_downsamples == (1.0, 4.0, 16.0)


def test_transparent_pixels_become_white() -> None:
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], dtype=np.uint8)
    assert rgba_to_rgb(rgba).tolist() == [[[10, 20, 30], [255, 255, 255]]]


class _CountingSlide(ArraySlide):
    """An in-memory slide that remembers the size of every region read from it."""

    reads: list[int]

    def read_region(self, l0_xy: tuple[int, int], level: int, lvl_size: tuple[int, int]) -> NDArray[np.uint8]:
        self.reads.append(lvl_size[0] * lvl_size[1])
        return super().read_region(l0_xy, level, lvl_size)


def test_a_slide_without_a_coarse_level_is_shrunk_in_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(1500, 2300, 3), dtype=np.uint8)
    slide = _CountingSlide(pixels, 0.25, downsamples=(1,))  # one level: the thumbnail reads level 0
    slide.reads = []
    monkeypatch.setattr("engine.slide.THUMB_BAND_PIXELS", 200_000)
    thumb, ds = slide.thumbnail(256)
    assert thumb.shape == (167, 256, 3) and ds == pytest.approx(2300 / 256)
    assert len(slide.reads) > 10 and max(slide.reads) <= 200_000 + 2300 * 10  # bands, never whole
    whole = np.asarray(Image.fromarray(pixels).resize((256, 167), Image.Resampling.BOX))
    assert np.abs(thumb.astype(int) - whole.astype(int)).max() <= 1  # the same picture


def test_a_narrow_slides_thumbnail_scale_holds_on_both_axes() -> None:
    slide = ArraySlide(np.full((20_000, 40, 3), 200, dtype=np.uint8), 0.25)
    thumb, ds = slide.thumbnail(1024)
    h, w = thumb.shape[:2]
    assert (h, w) == (1024, 2)
    assert abs(ds * h - 20_000) <= 1e-6 * 20_000  # the long side: exact
    assert abs(ds * w - 40) <= ds / 2  # the short side: within half a thumbnail pixel
