"""Build a LARGE pyramidal test slide: a mosaic of real PCam patches at 40x-like 0.25 µm/px.

Same layout as ``scripts/build_demo_slide.py`` (seeded tissue blobs, tumour blobs inside, glass
around), but with ``--tiles`` tissue cells drawn from PCam train+valid (with replacement once a
label's pool runs out), each 95 px patch resampled by 0.972/0.25 = 3.888 to about 369 px. Tiles
are rendered and JPEG-encoded band by band in worker processes and streamed into a BigTIFF, so
memory stays bounded whatever the size. A mosaic for benchmarks, not a real slide; the cell map
goes to ``<out stem>.truth.json``.

Run from the repository root: ``python benchmarks/make_large_slide.py --tiles 20000``.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pcam"
DEFAULT_OUT = Path("/tmp/equitriage_large_slide.tiff")
DESCRIPTION = (
    "EquiTriage benchmark MOSAIC of real PCam patches (CC0) resampled to 0.25 um/px on "
    "synthetic glass; not a real slide. Cell map: the .truth.json beside it"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .tiff (BigTIFF)")
    p.add_argument("--tiles", type=int, default=20000, help="tissue cells (95 px at 0.972 um/px)")
    p.add_argument("--tumour-fraction", type=float, default=0.15, help="of the tissue cells")
    p.add_argument("--tissue-fraction", type=float, default=0.45, help="of the whole grid")
    p.add_argument("--blobs", type=int, default=3, help="tissue blobs")
    p.add_argument("--mpp", type=float, default=0.25, help="level-0 um/px")
    p.add_argument("--downsamples", default="1,4,16,64", help="pyramid downsamples, from 1")
    p.add_argument("--quality", type=int, default=80, help="JPEG quality of the tiles")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from scripts.build_demo_slide import truth_path_for
    from scripts.mosaic import assign_sources, grid_for_count, make_layout
    from scripts.mosaic_slide import (
        PatchArchive,
        SlideSpec,
        check_inputs,
        truth_dict,
        write_slide,
        write_truth,
    )

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        zip_path, downsamples = check_inputs(args.data, args.downsamples)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2

    t0 = time.perf_counter()
    splits = ("train", "valid")
    archive = PatchArchive(zip_path)
    rows, cols = grid_for_count(args.tiles, args.tissue_fraction, aspect=4 / 3)
    n_tumour = round(args.tiles * args.tumour_fraction)
    layout = make_layout(
        rows, cols, args.tiles, n_tumour, seed=args.seed, n_tissue_blobs=args.blobs, n_tumour_blobs=3
    )
    sources = assign_sources(layout, archive.ids(splits, 0), archive.ids(splits, 1), seed=args.seed + 1)
    spec = SlideSpec(
        layout=layout,
        sources=sources,
        lvl0_mpp=args.mpp,
        downsamples=downsamples,
        quality=args.quality,
        seed=args.seed,
        description=DESCRIPTION,
    )
    w, h = spec.lvl_sizes[0]
    logging.getLogger(__name__).info(
        "%dx%d cells, %d tissue (%d tumour); level 0 %dx%d px; %d workers",
        rows,
        cols,
        args.tiles,
        n_tumour,
        w,
        h,
        args.workers,
    )
    write_slide(spec, zip_path, args.out, workers=args.workers, bigtiff=True)
    write_truth(truth_dict(spec, args.out.name, splits), truth_path_for(args.out))
    seconds = time.perf_counter() - t0

    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    n_tiles = sum(spec.tile_grid(lv)[0] * spec.tile_grid(lv)[1] for lv in range(len(downsamples)))
    print(  # noqa: T201
        f"wrote {args.out}: {args.out.stat().st_size / 1e6:.1f} MB, level 0 {w}x{h} px, "
        f"{len(downsamples)} levels, {args.tiles} tissue cells, {n_tiles} JPEG tiles, "
        f"{seconds:.1f} s, peak RSS main {self_mb:.0f} MB / largest worker {child_mb:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
