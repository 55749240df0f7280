"""Cost of one OpenSlide read by level and by where it starts: why reading dominates on 2 cores.

    python benchmarks/read_offsets.py SLIDE [--side 92] [--repeats 300]

OpenSlide takes level-0 coordinates and divides them by the level's downsample. Scanners store
downsamples that are not exact integers (3.99994, 2.0005, ...), so a read at level >= 1 almost
always starts at a fractional level pixel, which cairo paints through its slow sub-pixel path
(openslide/openslide issues 552 and 719). This prints the mean time of the same ``side`` x ``side``
read (tiles cached after the first) at each level, at the origin (an integral offset, one
stored tile) and at a point inside the slide (fractional at levels >= 1; it may span up to four
stored tiles, so compare it with the level-0 read inside, which does too but is integral).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import openslide


def time_read(osr: openslide.OpenSlide, xy: tuple[int, int], level: int, side: int, repeats: int) -> float:
    """Mean milliseconds of ``repeats`` identical reads after one warm-up read."""
    osr.read_region(xy, level, (side, side))
    t0 = time.perf_counter()
    for _ in range(repeats):
        osr.read_region(xy, level, (side, side))
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("slide", type=Path)
    p.add_argument("--side", type=int, default=92, help="read size in level pixels")
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args()

    try:
        osr = openslide.OpenSlide(str(args.slide))
    except openslide.OpenSlideError as exc:
        sys.stderr.write(f"{args.slide}: OpenSlide cannot open it ({exc}); pass a slide it reads\n")
        return 2
    w0, h0 = osr.dimensions
    inside = (w0 * 5 // 8 + 1, h0 * 3 // 8 + 1)  # odd level-0 coordinates: fractional at any level >= 1
    out = sys.stdout
    out.write(f"{args.slide.name}: {args.side} x {args.side} px reads, mean of {args.repeats}\n")
    out.write("level  downsample    at origin       inside  (inside's level offset)\n")
    for level, ds in enumerate(osr.level_downsamples):
        w, h = osr.level_dimensions[level]
        if w < 2 * args.side or h < 2 * args.side:
            break
        origin = time_read(osr, (0, 0), level, args.side, args.repeats)
        at = time_read(osr, inside, level, args.side, args.repeats)
        offset = f"{inside[0] / ds:.3f}, {inside[1] / ds:.3f}"
        out.write(f"{level:>5}  {ds:>10.5f}  {origin:>8.3f} ms  {at:>8.3f} ms  ({offset})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
