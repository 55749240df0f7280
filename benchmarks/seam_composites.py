"""Does a model fire on seams? Normal PCam patches against 4-patch composites of normal patches.

A tile grid that does not line up with a mosaic slide's cells (``tests/engine/
test_triage_slides.py`` shifts it by half a tile) cuts every tile from four PCam patches, with
sharp seams between them that no real slide has. This prints, for each model, the fraction of
normal ``valid`` patches at 0.5 or more, and the same for composites of the four facing quarters
of four random normal patches (what a half-tile-shifted tile of a negative mosaic holds).

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

DEFAULT_DATA = REPO.parent / "shared" / "data" / "pcam"


def say(text: str) -> None:
    """Benchmark output goes to stdout."""
    print(text)  # noqa: T201


def composites(patches: NDArray[np.uint8], n: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """``n`` tiles whose quarters are the facing corners of four random ``patches`` (95 px)."""
    side = patches.shape[1]
    h = side // 2
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        a, b, c, d = patches[rng.choice(len(patches), 4)]
        out[i, :h, :h] = a[side - h :, side - h :]
        out[i, :h, h:] = b[side - h :, : side - h]
        out[i, h:, :h] = c[: side - h, side - h :]
        out[i, h:, h:] = d[: side - h, : side - h]
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
    mixed = composites(normal, args.n, rng)
    say(f"# {args.n} normal valid patches and {args.n} 4-patch composites of normal patches")
    for path in args.models:
        model = Model.load(path, threads=2)
        ps, pc = model.predict(single), model.predict(mixed)
        say(
            f"{model.contract.model_version:45s} normal >= 0.5: {np.mean(ps >= 0.5):.3f} "
            f"(mean p {ps.mean():.3f})   composites >= 0.5: {np.mean(pc >= 0.5):.3f} (mean p {pc.mean():.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
