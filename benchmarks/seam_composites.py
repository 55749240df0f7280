"""Does a model fire on seams? Normal PCam patches against 4-patch composites of normal patches.

A tile grid that does not line up with a mosaic slide's cells (a grid shifted by half a tile)
cuts every tile from four PCam patches, with sharp seams between them that no real slide has.
This prints, for each model, the fraction at 0.5 or more of

- normal ``valid`` patches (95 px crops);
- *corner* composites: the facing corners of four random normal patches, what a
  half-tile-shifted tile of a negative mosaic holds (``training.augment.seam_composites``, the
  cut ``--seam-p`` trains on). PCam labels only a patch's central 32 px, so a normal patch's
  corners may hold tumour;
- *centre* composites, the control: the central 48 px of four normal patches (their labelled
  centre and 8 px around it) with the same seams. If these fire as often as the corner
  composites, the seams make the false positives, not what the corners hold.

Run from the repository root:
  python benchmarks/seam_composites.py assets/model.onnx OTHER.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.triage_slides import read_valid  # noqa: E402
from training.augment import facing_corners, seam_composites  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "pcam"


def say(text: str) -> None:
    """Benchmark output goes to stdout."""
    print(text)  # noqa: T201


def centre_composites(patches: NDArray[np.uint8], n: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """``n`` tiles whose quarters are the central 48 px of four random ``patches`` (95 px tiles)."""
    side = patches.shape[1]
    c0 = (side - 48) // 2
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        a, b, c, d = (p[c0 : c0 + 48, c0 : c0 + 48] for p in patches[rng.choice(len(patches), 4)])
        out[i] = facing_corners(a, b, c, d, size=(side, side))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    p.add_argument("--n", type=int, default=600)
    args = p.parse_args(argv)
    from engine.model import Model

    images, labels, _ = read_valid(args.data)
    rng = np.random.default_rng(0)
    normal = images[labels == 0][:, :95, :95]
    single = normal[rng.choice(len(normal), args.n)]
    zeros = np.zeros(len(normal), np.int64)
    corners = seam_composites(normal[: args.n], zeros[: args.n], normal, zeros, 1.0, rng)
    centres = centre_composites(normal, args.n, rng)
    say(f"# {args.n} each of: normal valid patches, corner composites, centre composites; at p >= 0.5")
    for path in args.models:
        model = Model.load(path, threads=2)
        rates = [float(np.mean(model.predict(x) >= 0.5)) for x in (single, corners, centres)]
        say(
            f"{model.contract.model_version:45s} normal {rates[0]:.3f}   corner composites {rates[1]:.3f}"
            f"   centre composites {rates[2]:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
