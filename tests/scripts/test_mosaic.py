"""Layout maths of the mosaic slides, and a tiny demo slide built from the real PCam zip."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scripts.mosaic import (
    GLASS,
    NORMAL,
    TUMOUR,
    assign_sources,
    grid_for_count,
    level_sizes,
    make_layout,
    tiles_touching_tissue,
    top_n_mask,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("rows", "cols", "n_tissue", "n_tumour"),
    [(28, 36, 400, 60), (10, 12, 30, 5), (40, 30, 700, 0), (6, 6, 16, 16)],
)
def test_layout_counts_are_exact(rows: int, cols: int, n_tissue: int, n_tumour: int) -> None:
    layout = make_layout(rows, cols, n_tissue, n_tumour, seed=3)
    assert layout.shape == (rows, cols)
    assert np.count_nonzero(layout != GLASS) == n_tissue
    assert np.count_nonzero(layout == TUMOUR) == n_tumour
    assert set(np.unique(layout)) <= {GLASS, NORMAL, TUMOUR}


@pytest.mark.parametrize("seed", [0, 1, 2, 4, 99])
def test_layout_is_seeded(seed: int) -> None:
    a = make_layout(28, 36, 400, 60, seed=seed)
    np.testing.assert_array_equal(a, make_layout(28, 36, 400, 60, seed=seed))
    assert not np.array_equal(a, make_layout(28, 36, 400, 60, seed=seed + 1000))


@pytest.mark.parametrize("seed", [0, 1, 2, 4, 99])
def test_tumour_is_carved_out_of_the_tissue_and_the_border_is_glass(seed: int) -> None:
    with_tumour = make_layout(28, 36, 400, 60, seed=seed, margin_t=2)
    without = make_layout(28, 36, 400, 0, seed=seed, margin_t=2)
    # Same tissue whatever the tumour count: tumour cells replace normal ones, never glass.
    np.testing.assert_array_equal(with_tumour != GLASS, without != GLASS)
    tumour = with_tumour == TUMOUR
    assert tumour.any() and not (tumour & (without == GLASS)).any()
    border = np.ones_like(tumour)
    border[2:-2, 2:-2] = False
    assert (with_tumour[border] == GLASS).all()


def test_layout_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="n_tissue"):
        make_layout(5, 5, 10, 0, seed=0)  # interior is 3x3
    with pytest.raises(ValueError, match="n_tumour"):
        make_layout(10, 10, 20, 21, seed=0)


def test_top_n_mask_breaks_ties_in_row_major_order() -> None:
    field = np.zeros((3, 4))
    field[2, 3] = 1.0
    mask = top_n_mask(field, 3)
    assert mask.sum() == 3
    assert mask[2, 3] and mask[0, 0] and mask[0, 1]
    with pytest.raises(ValueError, match="cannot pick"):
        top_n_mask(np.full((2, 2), -np.inf), 1)


def test_assign_sources_draws_from_the_right_pool() -> None:
    layout = make_layout(20, 20, 150, 30, seed=5)
    normal_ids = np.arange(1000, 1200, dtype=np.int64)
    tumour_ids = np.arange(5000, 5010, dtype=np.int64)  # fewer than 30: drawn with replacement
    sources = assign_sources(layout, normal_ids, tumour_ids, seed=6)
    assert (sources[layout == GLASS] == -1).all()
    normal = sources[layout == NORMAL]
    assert np.isin(normal, normal_ids).all() and len(set(normal)) == normal.size
    assert np.isin(sources[layout == TUMOUR], tumour_ids).all()
    np.testing.assert_array_equal(sources, assign_sources(layout, normal_ids, tumour_ids, seed=6))


def test_grid_and_level_sizes() -> None:
    rows, cols = grid_for_count(20000, 0.55, aspect=4 / 3)
    assert rows * cols >= 20000 / 0.55 and abs(cols / rows - 4 / 3) < 0.05
    assert level_sizes(3420, 2660, (1, 4, 16)) == [(3420, 2660), (855, 665), (214, 166)]


def test_tiles_touching_tissue_follows_the_footprint() -> None:
    layout = np.zeros((6, 6), np.int8)
    layout[2, 3] = NORMAL  # src px y 190..285, x 285..380 with 95 px cells
    touch = tiles_touching_tissue(layout, 95, (1.0, 1.0), (570, 570), 128, margin_src_px=0)
    expected = np.zeros((5, 5), bool)
    expected[1:3, 2:3] = True  # tile rows 128..384, tile col 256..384
    np.testing.assert_array_equal(touch, expected)
    wide = tiles_touching_tissue(layout, 95, (1.0, 1.0), (570, 570), 128, margin_src_px=10)
    assert wide[1:3, 2:3].all() and wide.sum() > touch.sum()


def _manifest_row(zip_path: Path, source_index: int) -> dict[str, str]:
    with zipfile.ZipFile(zip_path) as zf:
        rows = csv.DictReader(io.StringIO(zf.read("labels.csv").decode()))
        return next(r for r in rows if int(r["source_index"]) == source_index)


def _label_and_split(zip_path: Path, source_index: int) -> tuple[str, str]:
    row = _manifest_row(zip_path, source_index)
    return row["label"], row["split"]


def _source_patch(zip_path: Path, source_index: int) -> np.ndarray:
    """The 95 px crop of one patch, read independently of scripts.mosaic_slide."""
    from PIL import Image

    row = _manifest_row(zip_path, source_index)
    with zipfile.ZipFile(zip_path) as zf:
        rgb = np.asarray(Image.open(io.BytesIO(zf.read(row["path"]))).convert("RGB"))
    return rgb[:95, :95].astype(np.int16)


def test_tiny_demo_slide_opens_in_openslide(shared_data: Path, tmp_path: Path) -> None:
    openslide = pytest.importorskip("openslide")
    from scripts import build_demo_slide

    out = tmp_path / "tiny.tiff"
    argv = [
        "--data",
        str(shared_data / "pcam"),
        "--out",
        str(out),
        "--rows",
        "8",
        "--cols",
        "10",
        "--tissue",
        "30",
        "--tumour",
        "6",
        "--downsamples",
        "1,2",
        "--seed",
        "1",
    ]
    assert build_demo_slide.main(argv) == 0
    truth = json.loads((tmp_path / "tiny.truth.json").read_text())
    assert truth["counts"] == {"glass": 50, "normal": 24, "tumour": 6}

    with openslide.OpenSlide(out) as slide:
        assert slide.dimensions == (950, 760) == tuple(truth["lvl0_size"])
        assert slide.level_count == 2
        assert slide.level_dimensions[1] == (475, 380)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.972)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.972)

        r, c = next(
            (r, c) for r, row in enumerate(truth["classes"]) for c, v in enumerate(row) if v == "tumour"
        )
        got = np.asarray(slide.read_region((c * 95, r * 95), 0, (95, 95)).convert("RGB"))
        zip_path = shared_data / "pcam" / "pcam_train_valid.zip"
        idx = truth["source_index"][r][c]
        want = _source_patch(zip_path, idx)
        assert _label_and_split(zip_path, idx) == ("1", "valid")
        # PCam patches are noisy: a q90 4:2:0 round trip alone costs about 3 grey levels.
        err = np.abs(got.astype(np.int16) - want).mean()
        assert err < 6.0
        # ...and the match is exact in place: one pixel off, or another patch, is much worse.
        assert np.abs(got[:, 1:].astype(np.int16) - want[:, :-1]).mean() > 1.5 * err
        assert np.abs(got[1:].astype(np.int16) - want[:-1]).mean() > 1.5 * err
        other_index = next(i for row in truth["source_index"] for i in row if i not in (None, idx))
        assert np.abs(got.astype(np.int16) - _source_patch(zip_path, other_index)).mean() > 3 * err

        g_r, g_c = next(
            (r, c) for r, row in enumerate(truth["classes"]) for c, v in enumerate(row) if v == "glass"
        )
        glass = np.asarray(slide.read_region((g_c * 95, g_r * 95), 0, (95, 95)).convert("RGB"))
        assert glass.min() > 220 and glass.std() < 5


def test_committed_demo_slide_matches_its_truth() -> None:
    openslide = pytest.importorskip("openslide")
    slide_path = REPO / "assets" / "demo_slide.tiff"
    truth_path = REPO / "assets" / "demo_slide.truth.json"
    if not slide_path.is_file():
        pytest.skip("assets/demo_slide.tiff not built (python scripts/build_demo_slide.py)")
    truth = json.loads(truth_path.read_text())
    with openslide.OpenSlide(slide_path) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
        assert slide.dimensions == tuple(truth["lvl0_size"])
        assert slide.dimensions == (truth["cols"] * 95, truth["rows"] * 95)
        assert slide.level_count >= 2
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.972)
    counts = truth["counts"]
    assert counts["tumour"] > 0 and counts["normal"] > 0 and counts["glass"] > 0
    assert slide_path.stat().st_size < 3_000_000
