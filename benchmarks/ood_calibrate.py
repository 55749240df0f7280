"""Calibrate the out-of-distribution check (``engine.ood``) for a model, re-runnably.

1. Measures the colour reference (per-patch mean optical density) on PatchCamelyon train patches
   from ``pcam_train_valid.zip`` and reports the colour (and, for a model exporting features,
   feature) distances of PCam train and valid patches: about 1 on both.
2. Analyses the calibration slides with the engine: in distribution, the demo mosaic (PCam
   ``valid`` patches) and any mosaics given with ``--in-dist``; out of distribution, CMU-1
   (skin) and the TCGA head-and-neck slide at 0.25 and 0.5 µm/px (it records none).
3. Prints each slide's scores and flag under the limits. With ``--choose`` it sets each
   measure's far-fraction limit halfway (geometric mean) between the highest in-distribution and
   the lowest out-of-distribution slide when they separate, and keeps the contract's limit (and
   says so) when they do not; median limits stay as they are. With ``--stamp OUT.onnx`` it writes
   the model with the colour reference and the limits in its contract (weights untouched).

    python -m benchmarks.ood_calibrate [--model M] [--data DIR] [--in-dist SLIDE...] [--stamp OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.model import Model
from engine.ood import ColourStats, OodPolicy, tile_colour
from engine.pipeline import AnalysisParams, analyse_slide
from engine.preprocess import prepare
from engine.slide import open_slide

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EQUITRIAGE_DATA", ROOT.parent / "shared" / "data"))
CELL_PX = 95


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def pcam_patches(data: Path, split: str, n: int, seed: int = 0) -> NDArray[np.uint8]:
    """``n`` random patches of a split, central 95 px."""
    with zipfile.ZipFile(data / "pcam" / "pcam_train_valid.zip") as z:
        names = sorted(m for m in z.namelist() if m.startswith(f"{split}/") and m.endswith(".jpg"))
        pick = np.random.default_rng(seed).choice(len(names), size=min(n, len(names)), replace=False)
        out = np.empty((len(pick), CELL_PX, CELL_PX, 3), dtype=np.uint8)
        for i, j in enumerate(sorted(pick)):
            img = np.asarray(Image.open(io.BytesIO(z.read(names[j]))).convert("RGB"))
            out[i] = img[:CELL_PX, :CELL_PX]
    return out


def patch_feature_distances(model: Model, patches: NDArray[np.uint8]) -> NDArray[np.float64] | None:
    stats = model.contract.feature_stats
    if stats is None:
        return None
    out = []
    for start in range(0, len(patches), 128):
        _, feats = model.infer_prepared(prepare(patches[start : start + 128], model.contract))
        assert feats is not None
        out.append(stats.distance(feats))
    return np.concatenate(out)


def calibration_slides(data: Path, in_dist: list[Path]) -> list[tuple[str, Path, float | None, bool]]:
    """(label, path, µm/px override, expected out of distribution)."""
    slides = data / "slides"
    demo = ROOT / "assets" / "demo_slide.tiff"
    out: list[tuple[str, Path, float | None, bool]] = [("demo mosaic", demo, None, False)]
    out += [(p.name, p, None, False) for p in in_dist]
    out.append(("CMU-1 skin", slides / "CMU-1-Small-Region.svs", None, True))
    for mpp in (0.25, 0.5):
        out.append((f"TCGA H&N @{mpp}", slides / "tcga-cr-7395-01a-01-ts1.svs", mpp, True))
    return out


def choose_far_fraction(inside: list[float], outside: list[float], current: float, name: str) -> float:
    """Halfway (geometric mean) between the in- and out-of-distribution far fractions if every
    out-of-distribution slide lies above every in-distribution one; else ``current``."""
    if not inside or not outside or max(inside) >= min(outside):
        say(f"{name}: far fractions do not separate the slides; limit stays {current}")
        return current
    low, high = max(max(inside), 1e-3 * min(outside)), min(outside)  # no zero for the mean
    chosen = float(np.sqrt(low * high))
    if max(inside) <= round(chosen, 3) < high:  # a slide is flagged above the limit: rounded
        chosen = round(chosen, 3)  # only where that still splits the slides
    say(f"{name}: in-distribution up to {max(inside):.3f}, out from {high:.3f}: limit {chosen}")
    return chosen


def stamp(model_path: Path, out_path: Path, policy: OodPolicy) -> None:
    """Write ``model_path`` to ``out_path`` with ``policy`` in its contract (graph unchanged)."""
    from engine.outputs import write_bytes_atomic
    from training.stamp import restamp

    write_bytes_atomic(out_path, restamp(model_path.read_bytes(), lambda c: replace(c, ood=policy)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    p.add_argument("--patches", type=int, default=4000, help="PCam train patches for the reference")
    p.add_argument("--in-dist", type=Path, nargs="*", default=[], help="more in-distribution slides")
    p.add_argument("--choose", action="store_true", help="choose the far-fraction limits")
    p.add_argument("--stamp", type=Path, default=None, help="write the model with the policy here")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = Model.load(args.model, threads=2)
    train = pcam_patches(args.data, "train", args.patches)
    colour = ColourStats.fit(tile_colour(train))
    policy = replace(
        model.contract.ood,
        colour=colour,
        calibration=(
            f"benchmarks/ood_calibrate.py: colour reference from {colour.n_patches} PCam train patches"
        ),
    )
    say(f"colour reference: {json.dumps(policy.as_dict()['colour'])}")
    numbers: dict[str, object] = {"colour": policy.as_dict()["colour"], "slides": {}}
    valid = pcam_patches(args.data, "valid", 1000, seed=1)
    for name, patches in (("PCam train", train[:1000]), ("PCam valid", valid)):
        cd = colour.distance(tile_colour(patches))
        fd = patch_feature_distances(model, patches)
        fdt = "" if fd is None else f", feature median {np.median(fd):.2f} p95 {np.percentile(fd, 95):.2f}"
        say(f"{name}: colour median {np.nanmedian(cd):.2f} p95 {np.nanpercentile(cd, 95):.2f}{fdt}")
    model = Model(model._session, replace(model.contract, ood=policy), model.path, model.sha256)
    wrong = 0
    seen: list[tuple[bool, dict[str, object]]] = []
    for label, path, mpp, expected in calibration_slides(args.data, args.in_dist):
        with open_slide(path, mpp=mpp) as slide:
            a = analyse_slide(slide, model, AnalysisParams(read_threads=1))
        assert a.ood is not None
        v = a.ood.as_dict()
        seen.append((expected, v))
        ok = a.ood.out_of_distribution == expected
        wrong += not ok
        say(
            f"{label:22s} tiles {len(a.probs):5d} score {a.verdict.score!s:.6} "
            f"colour {v['colour_median']} / far {v['colour_far_fraction']}  "
            f"features {v['feature_median']} / far {v['feature_far_fraction']}  "
            f"OOD {a.ood.out_of_distribution} {'ok' if ok else 'WRONG'}"
        )
        numbers["slides"][label] = {**v, "out_of_distribution": a.ood.out_of_distribution}  # type: ignore[index]
    if args.choose:
        limits = {}
        for key, attr in (
            ("colour_far_fraction", "colour_limits"),
            ("feature_far_fraction", "feature_limits"),
        ):
            current = getattr(policy, attr)
            values = [(exp, float(x)) for exp, v in seen if isinstance(x := v[key], float | int)]
            chosen = choose_far_fraction(
                [x for exp, x in values if not exp],
                [x for exp, x in values if exp],
                current.far_fraction,
                attr,
            )
            limits[attr] = replace(current, far_fraction=chosen)
        policy = replace(policy, **limits)
        numbers["limits"] = {k: vars(v) for k, v in limits.items()}
        say("re-run without --choose on a stamped model to see the flags under the chosen limits")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))
    if args.stamp:
        stamp(model.path, args.stamp, policy)
        say(f"stamped {args.stamp}")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
