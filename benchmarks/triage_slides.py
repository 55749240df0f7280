"""The slides of the slide-level triage benchmark (``benchmarks/slide_triage.py``).

GRID slides: the model is run once over every PCam ``valid`` patch in ``VARIANTS`` versions
(the square's 8 symmetries, all but the identity with a light colour jitter); a slide is a
probability grid whose tissue cells draw (patch, variant) pairs of its half with replacement.
ENGINE check: a few real mosaic slides written with ``scripts/mosaic_slide.py`` and analysed
through OpenSlide and ``engine.pipeline``, against their grid twins.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

CELL_MM = 95 * 0.972 / 1000  # side of one tile, mm
VARIANTS = 8
JITTER_GAIN = 0.06  # per-channel gain in [1 - g, 1 + g]
JITTER_OFFSET = 6.0  # per-channel offset in [-o, o] grey levels
NEG_SIZES = (300, 1000, 3000, 10000, 20000, 40000)
NEG_PER_SIZE = 10
POS_PER_CLASS = 50
CLASSES = ("itc", "micro", "macro")
OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))  # one-pixel crops of a 96 px patch (row, column)
REPLICATE_SEED_STRIDE = 100_003  # replicate r's seeds: the set's base seeds + r x this

Grid = NDArray[np.float32]


def say(text: str) -> None:
    """Benchmark output goes to stdout."""
    print(text)  # noqa: T201


# ----------------------------------------------------------------------------- patches and probs


def read_valid(data: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64]]:
    """PCam ``valid`` patches (96 px), labels and source indices, in the zip's labels.csv order."""
    from PIL import Image

    images: list[NDArray[np.uint8]] = []
    labels: list[int] = []
    sources: list[int] = []
    with zipfile.ZipFile(data / "pcam_train_valid.zip") as zf:
        rows = list(csv.DictReader(io.TextIOWrapper(zf.open("labels.csv"), encoding="utf-8")))
        for row in rows:
            if row["split"] != "valid":
                continue
            with Image.open(io.BytesIO(zf.read(row["path"]))) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
            labels.append(int(row["label"]))
            sources.append(int(row["source_index"]))
    return np.stack(images), np.asarray(labels, np.int64), np.asarray(sources, np.int64)


def variant(patch: NDArray[np.uint8], v: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Symmetry ``v`` of the square (rot90 ** (v % 4), then a flip if v >= 4), jittered if v > 0."""
    out = np.rot90(patch, v % 4)
    if v >= 4:
        out = out[:, ::-1]
    if v == 0:
        return np.ascontiguousarray(out)
    gain = rng.uniform(1 - JITTER_GAIN, 1 + JITTER_GAIN, 3)
    offset = rng.uniform(-JITTER_OFFSET, JITTER_OFFSET, 3)
    return np.clip(np.rint(out * gain + offset), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PatchTable:
    """Model probabilities of every valid patch in every variant, and the two halves."""

    probs: NDArray[np.float32]  # (patches, VARIANTS)
    labels: NDArray[np.int64]
    sources: NDArray[np.int64]
    select: NDArray[np.int64]
    heldout: NDArray[np.int64]

    def half(self, name: str) -> NDArray[np.int64]:
        """The patch indices of the half called ``name`` ("selection" or "held-out")."""
        return self.select if name == "selection" else self.heldout


def patch_table(
    data: Path, model_path: Path | None, cache: Path | None, second_look: bool = False
) -> PatchTable:
    """Run the model once over every valid patch and variant (cached per model sha256).

    ``second_look``: each probability is the mean over the patch's four one-pixel crops (the same
    variant and jitter on each), what a second look at one-pixel offsets would give the engine.
    """
    from engine.model import Model
    from training.splits import VALID_SPLIT_SEED, halve, pixel_groups

    model = Model.load(model_path, threads=1)
    tag = "-look2" if second_look else ""
    cache = cache or Path(tempfile.gettempdir()) / f"equitriage_slide_triage_{model.sha256[:12]}{tag}.npz"
    key = f"{model.sha256}{tag}"  # a cache belongs to one model file and one way of reading
    if cache.is_file():
        z = np.load(cache)
        if "model" in z.files and str(z["model"]) == key:
            return PatchTable(z["probs"], z["labels"], z["sources"], z["select"], z["heldout"])
        say(f"# {cache} holds another model's probabilities (or another reading): made again")
    t0 = time.perf_counter()
    images, labels, sources = read_valid(data)
    select, heldout = halve(labels, pixel_groups(images), VALID_SPLIT_SEED)
    side = model.contract.input_size
    offsets = OFFSETS if second_look else OFFSETS[:1]
    probs = np.zeros((len(images), VARIANTS), np.float32)
    for v in range(VARIANTS):
        for dy, dx in offsets:
            rng = np.random.default_rng(1000 + v)  # the same jitter draws at every offset
            batch = np.stack([variant(im[dy : dy + side, dx : dx + side], v, rng) for im in images])
            probs[:, v] += model.predict(batch) / len(offsets)
    np.savez(cache, probs=probs, labels=labels, sources=sources, select=select, heldout=heldout, model=key)
    say(f"# model over {len(images)} patches x {VARIANTS} variants: {time.perf_counter() - t0:.0f} s")
    return PatchTable(probs, labels, sources, select, heldout)


# ----------------------------------------------------------------------------------- slides


@dataclass(frozen=True)
class GridSlide:
    """One grid slide: probabilities (NaN on glass), its true metastasis and its class."""

    name: str
    probs: Grid
    tumour: NDArray[np.bool_]
    size_class: str  # "negative" or one of CLASSES
    extent_mm: float
    tissue_tiles: int


def extent_mm(mask: NDArray[np.bool_]) -> float:
    """Largest extent of a set of cells: max centre-to-centre distance plus one cell, in mm."""
    rr, cc = np.nonzero(mask)
    if len(rr) == 0:
        return 0.0
    pts = np.stack([rr, cc], 1).astype(np.float64)
    if len(pts) > 3000:
        pts = pts[np.random.default_rng(0).choice(len(pts), 3000, replace=False)]
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max()
    return float((d + 1) * CELL_MM)


def size_class(extent: float) -> str:
    if extent < 0.2:
        return "itc"
    return "micro" if extent <= 2.0 else "macro"


def layout_for(n_tissue: int, n_tumour: int, seed: int) -> NDArray[np.int8]:
    from scripts.mosaic import grid_for_count, make_layout

    rows, cols = grid_for_count(n_tissue, 0.45, aspect=4 / 3)
    return make_layout(rows, cols, n_tissue, n_tumour, seed, n_tissue_blobs=3, n_tumour_blobs=1)


def fill(
    layout: NDArray[np.int8],
    table: PatchTable,
    half: NDArray[np.int64],
    rng: np.random.Generator,
    variants: Sequence[int] = tuple(range(VARIANTS)),
) -> Grid:
    """Probabilities of a layout: each tissue cell draws a (patch, variant) of its label."""
    from scripts.mosaic import NORMAL, TUMOUR

    grid = np.full(layout.shape, np.nan, np.float32)
    for cls, label in ((NORMAL, 0), (TUMOUR, 1)):
        cells = layout == cls
        pool = half[table.labels[half] == label]
        n = int(cells.sum())
        pick = rng.choice(pool, n)
        var = rng.choice(np.asarray(variants), n)
        grid[cells] = table.probs[pick, var]
    return grid


def tumour_cells_for(cls: str, rng: np.random.Generator) -> int:
    if cls == "itc":
        return int(rng.integers(1, 3))
    if cls == "micro":
        return round(math.exp(rng.uniform(math.log(3), math.log(250))))
    return round(math.exp(rng.uniform(math.log(500), math.log(3000))))


def build_set(table: PatchTable, half_name: str, replicate: int = 0) -> list[GridSlide]:
    """The slides of one half: NEG_PER_SIZE negatives per size, POS_PER_CLASS per class.

    ``replicate`` r > 0 lays out a different set from the same patches (other layouts and other
    draws of patch and variant); replicate 0 is the set every earlier figure was measured on.
    """
    half = table.half(half_name)
    seed0 = (16_000 if half_name == "selection" else 61_000) + REPLICATE_SEED_STRIDE * replicate
    slides: list[GridSlide] = []
    from scripts.mosaic import TUMOUR

    for i, n in enumerate(s for s in NEG_SIZES for _ in range(NEG_PER_SIZE)):
        rng = np.random.default_rng(seed0 + i)
        layout = layout_for(n, 0, seed0 + i)
        grid = fill(layout, table, half, rng)
        slides.append(GridSlide(f"neg-{n}-{i}", grid, layout == TUMOUR, "negative", 0.0, n))
    k = 0
    for cls in CLASSES:
        made = 0
        while made < POS_PER_CLASS:
            k += 1
            rng = np.random.default_rng(seed0 + 500 + k)
            n_t = tumour_cells_for(cls, rng)
            sizes = [s for s in NEG_SIZES if s >= 3 * n_t]
            n = sizes[made % len(sizes)]
            layout = layout_for(n, n_t, seed0 + 500 + k)
            tumour = layout == TUMOUR
            ext = extent_mm(tumour)
            if size_class(ext) != cls:
                continue
            grid = fill(layout, table, half, rng)
            slides.append(GridSlide(f"{cls}-{n}-{k}", grid, tumour, cls, ext, n))
            made += 1
    return slides


# --------------------------------------------------------------------------- engine check


def engine_check(table: PatchTable, model_path: Path | None, data: Path, big: int = 0) -> None:
    """Real mosaic slides through OpenSlide + the pipeline vs their grid twins (identity variant)."""
    from engine.model import Model
    from engine.pipeline import analyse_slide
    from engine.slide import open_slide
    from engine.triage import judge
    from scripts.mosaic import NORMAL, TUMOUR, assign_sources
    from scripts.mosaic_slide import SlideSpec, write_slide

    model = Model.load(model_path, threads=1)
    policy = model.contract.triage
    archive_zip = data / "pcam_train_valid.zip"
    held = table.heldout
    row_of = {int(s): i for i, s in enumerate(table.sources)}
    cases = [("negative", 2000, 0, 71), ("micro", 2000, 12, 72), ("macro", 3000, 700, 73)]
    if big:
        cases.append(("negative", big, 0, 74))
    say("\nENGINE check (real mosaic slides, OpenSlide + engine.pipeline, held-out patches, no jitter):")
    say("case       tiles  engine score/category            grid-twin score/category   mean/max |dp|")
    for name, n, n_t, seed in cases:
        layout = layout_for(n, n_t, seed)
        normal_ids = table.sources[held[table.labels[held] == 0]]
        tumour_ids = table.sources[held[table.labels[held] == 1]]
        sources = assign_sources(layout, normal_ids, tumour_ids, seed)
        spec = SlideSpec(layout, sources, 0.972, (1, 4, 16), 90, seed, "slide_triage engine check")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.tiff"
            t_build = time.perf_counter()
            write_slide(spec, archive_zip, path, workers=1, bigtiff=n > 10000)
            t_build = time.perf_counter() - t_build
            with open_slide(path) as slide:
                analysis = analyse_slide(slide, model)
        eng = analysis.prob_grid()
        twin = np.full(layout.shape, np.nan, np.float32)
        cells = np.isin(layout, (NORMAL, TUMOUR))
        twin[cells] = table.probs[[row_of[int(s)] for s in sources[cells]], 0]
        # The engine grid may be one row/col smaller than the layout (partial tiles dropped).
        r, c = eng.shape
        twin = twin[:r, :c]
        both = np.isfinite(eng) & np.isfinite(twin)
        # The twin holds the cells the engine analysed (its tissue detection leaves out pale
        # patches and ragged edges), so the two differ only by what the tiles look like.
        twin[~both] = np.nan
        diff = np.abs(eng[both] - twin[both])
        cell_mm2 = CELL_MM**2
        v_eng, v_twin = analysis.verdict, judge(twin, policy, cell_mm2)
        say(
            f"{name:9s} {int(both.sum()):6d}  {v_eng.score!s:>9} {v_eng.category:20s}  "
            f"{v_twin.score!s:>9} {v_twin.category:20s}  {diff.mean():.3f} / {diff.max():.3f}"
        )
        n_eng = int(np.isfinite(eng).sum())
        say(
            f"  engine analysed {n_eng} of the layout's {int(cells.sum())} tissue cells "
            f"(slide built in {t_build:.0f} s, analysed in {analysis.timings_s['total']:.0f} s)"
        )
