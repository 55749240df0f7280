"""Does the engine's heatmap keep what the model knows? A mosaic slide's tiles against its truth.

A mosaic from ``benchmarks/make_large_slide.py`` (or ``scripts/mosaic_slide.py``) records which
PCam patch lies in every cell (``<slide>.truth.json``). After ``python -m engine analyse`` of
that slide, each tile of ``tiles.csv`` is labelled by the cell under its centre, and the tile
AUC is compared with the model's AUC on the very patches of those cells, read straight from the
PCam zip (the 95 px crop the mosaic was built from). The gap is what the slide path costs:
resampling to the slide's µm/px and back, JPEG in the pyramid, and a tile grid that does not
line up with the cells (tiles straddling two cells are reported separately).

Run from the repository root:
  python benchmarks/make_large_slide.py --tiles 4000 --out /tmp/big.tiff
  python -m engine analyse /tmp/big.tiff --output /tmp/big-out
  python benchmarks/heatmap_truth.py /tmp/big-out/<result folder> /tmp/big.truth.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "pcam"
PURE = 0.9  # a tile is "pure" when this fraction of it lies in the cell under its centre


def say(text: str) -> None:
    """Benchmark output goes to stdout."""
    print(text)  # noqa: T201


def tile_labels(
    tiles: NDArray[np.float64], truth: dict[str, object]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Label (-1 glass, 0 normal, 1 tumour), source patch and purity of each ``x0,y0,w0,h0`` tile."""
    cell = float(truth["lvl0_cell_px"])  # type: ignore[arg-type]
    classes = truth["classes"]
    sources = truth["source_index"]
    assert isinstance(classes, list) and isinstance(sources, list)
    code = {"glass": -1, "normal": 0, "tumour": 1}
    labels = np.full(len(tiles), -1, np.int64)
    source = np.full(len(tiles), -1, np.int64)
    purity = np.zeros(len(tiles))
    for i, (x0, y0, w0, h0) in enumerate(tiles):
        r, c = int((y0 + h0 / 2) // cell), int((x0 + w0 / 2) // cell)
        if not (0 <= r < len(classes) and 0 <= c < len(classes[0])):
            continue
        labels[i] = code[classes[r][c]]
        source[i] = -1 if sources[r][c] is None else int(sources[r][c])
        ox = max(0.0, min(x0 + w0, (c + 1) * cell) - max(x0, c * cell))
        oy = max(0.0, min(y0 + h0, (r + 1) * cell) - max(y0, r * cell))
        purity[i] = ox * oy / (w0 * h0)
    return labels, source, purity


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", type=Path, help="result folder holding tiles.csv")
    p.add_argument("truth", type=Path, help="the mosaic's .truth.json")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    args = p.parse_args(argv)

    from engine.model import Model
    from scripts.pcam_patches import PCAM_ZIP, PatchArchive
    from training.metrics import auc

    truth = json.loads(args.truth.read_text(encoding="utf-8"))
    with (args.result / "tiles.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tiles = np.array([[float(r[k]) for k in ("x0", "y0", "w0", "h0")] for r in rows])
    probs = np.array([float(r["prob"]) for r in rows])
    labels, source, purity = tile_labels(tiles, truth)
    keep = labels >= 0
    pure = keep & (purity >= PURE)
    model = Model.load(args.model, threads=2)
    archive = PatchArchive(args.data / PCAM_ZIP)
    ids = np.unique(source[pure])
    patch_prob = dict(
        zip(ids.tolist(), model.predict(np.stack([archive.patch(i) for i in ids])), strict=True)
    )
    direct = np.array([patch_prob[s] for s in source[pure]], dtype=np.float64)

    say(
        f"# {args.result.name}: {len(rows)} tiles, {int(keep.sum())} on tissue cells, "
        f"{int(pure.sum())} pure (>= {PURE:.0%} in one cell); model {model.contract.model_version}"
    )
    for name, sel in (("all tissue tiles", keep), ("pure tiles", pure)):
        y, pr = labels[sel], probs[sel]
        say(
            f"{name:18s} heatmap AUC {auc(y, pr):.3f}  normal >= 0.5: {np.mean(pr[y == 0] >= 0.5):.1%}  "
            f"tumour >= 0.5: {np.mean(pr[y == 1] >= 0.5):.1%}"
        )
    y = labels[pure]
    say(
        f"{'same patches':18s} direct AUC  {auc(y, direct):.3f}  "
        f"normal >= 0.5: {np.mean(direct[y == 0] >= 0.5):.1%}  "
        f"tumour >= 0.5: {np.mean(direct[y == 1] >= 0.5):.1%}  (the 95 px crops, no slide in between)"
    )
    say(f"pure tiles: mean |heatmap - direct| {np.mean(np.abs(probs[pure] - direct)):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
