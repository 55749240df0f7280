"""Build ``assets/demo_slide.tiff``: a small MOSAIC of real PCam patches, not a real slide.

A grid of 95 px cells (PCam ``valid`` patches, 96 px centre-cropped to 95, pixels unchanged)
at 0.972 µm/px: seeded irregular tissue blobs hold label-0 patches, smaller blobs inside them
hold label-1 (tumour) patches, and the rest is glass (near-white with light noise). Written as
a generic pyramidal tiled TIFF (256 px JPEG tiles) that OpenSlide 4 opens with
``openslide.mpp-x`` = 0.972. The cell map goes to ``demo_slide.truth.json`` beside it.

Run from the repository root: ``python scripts/build_demo_slide.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pcam"
DEFAULT_OUT = REPO / "assets" / "demo_slide.tiff"
DESCRIPTION = (
    "EquiTriage demo MOSAIC of real PCam valid patches (CC0) on synthetic glass; "
    "not a real slide. Cell map: the .truth.json beside it"
)


def truth_path_for(slide: Path) -> Path:
    """``x/demo_slide.tiff`` -> ``x/demo_slide.truth.json``."""
    return slide.with_name(slide.name.split(".")[0] + ".truth.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .tiff")
    p.add_argument("--truth", type=Path, default=None, help="truth JSON (default: beside --out)")
    p.add_argument("--rows", type=int, default=28)
    p.add_argument("--cols", type=int, default=36)
    p.add_argument("--tissue", type=int, default=400, help="tissue cells (normal + tumour)")
    p.add_argument("--tumour", type=int, default=60, help="tumour cells")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the tiles")
    p.add_argument("--downsamples", default="1,4,16", help="pyramid downsamples, from 1")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    from scripts.mosaic import assign_sources, make_layout
    from scripts.mosaic_slide import (
        PatchArchive,
        SlideSpec,
        check_inputs,
        truth_dict,
        write_slide,
        write_truth,
    )
    from training.field_of_view import PCAM_MPP

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        zip_path, downsamples = check_inputs(args.data, args.downsamples)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2

    splits = ("valid",)
    archive = PatchArchive(zip_path)
    layout = make_layout(args.rows, args.cols, args.tissue, args.tumour, seed=args.seed)
    sources = assign_sources(layout, archive.ids(splits, 0), archive.ids(splits, 1), seed=args.seed + 1)
    spec = SlideSpec(
        layout=layout,
        sources=sources,
        lvl0_mpp=PCAM_MPP,
        downsamples=downsamples,
        quality=args.quality,
        seed=args.seed,
        description=DESCRIPTION,
    )
    write_slide(spec, zip_path, args.out)
    truth = args.truth or truth_path_for(args.out)
    write_truth(truth_dict(spec, args.out.name, splits), truth)
    w, h = spec.lvl_sizes[0]
    print(  # noqa: T201
        f"wrote {args.out} ({args.out.stat().st_size} bytes, {w}x{h} px, "
        f"{len(downsamples)} levels) and {truth}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
