"""Where does a model see tumour? Each patch's centre kept, the rest mirrored from it.

PCam labels a patch by its central 32 x 32 px only, so a "normal" patch may hold tumour toward
its edge, and a model that calls such a patch tumour may be right about the tissue. This keeps
the central ``K`` px of every PCam ``valid`` patch (K = 32, 48, 64), fills the rest of the 95 px
input by mirroring that centre outwards (so the edge is gone and no blank border is added), and
prints the model's mean probability and the share at 0.5 and 0.9 or more, whole against centre
only, for the tumour patches, the normal ones, and the *stubborn* normal patches of
``benchmarks/slide_triage.py`` (p >= 0.9 in at least 4 of their 8 variants). If a stubborn
patch keeps its probability with only its centre, the evidence the model uses lies in the
labelled centre (or the few pixels around it), not toward the edge.

Mirroring changes the texture a little, so read each group against the tumour and normal
patches under the same crop, not against their whole-patch figures.

Run from the repository root:
  python benchmarks/centre_evidence.py [--model M --cache M_PROBS.npz]
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

from benchmarks.slide_triage import DEFAULT_DATA, STUBBORN_P, STUBBORN_VARIANTS, stubborn_normals  # noqa: E402
from benchmarks.triage_slides import patch_table, read_valid, say  # noqa: E402

KEEP = (32, 48, 64)


def centre_only(patch: NDArray[np.uint8], keep: int, side: int) -> NDArray[np.uint8]:
    """The central ``keep`` px of ``patch`` mirrored outwards to ``side`` x ``side`` (the crop is
    centred as ``patch[:side, :side]`` is, so the kept pixels stay where they were)."""
    n = patch.shape[0]
    a = (n - keep) // 2
    centre = patch[a : a + keep, a : a + keep]
    pad = ((a, n - keep - a), (a, n - keep - a), (0, 0))
    return np.pad(centre, pad, mode="symmetric")[:side, :side]


def group_line(name: str, whole: NDArray[np.float32], centre: NDArray[np.float32]) -> str:
    return (
        f"  {name:24s} {len(whole):5d}  mean p {whole.mean():.3f} -> {centre.mean():.3f}   "
        f">= 0.5: {np.mean(whole >= 0.5):.2f} -> {np.mean(centre >= 0.5):.2f}   "
        f">= 0.9: {np.mean(whole >= 0.9):.2f} -> {np.mean(centre >= 0.9):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pcam_train_valid.zip")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--cache", type=Path, default=None, help="slide_triage's patch-probability cache")
    args = p.parse_args(argv)
    from engine.model import Model

    model = Model.load(args.model, threads=1)
    side = model.contract.input_size
    # slide_triage's table: its variants define "stubborn", and variant 0 is the whole patch as is
    table = patch_table(args.data, args.model, args.cache)
    images = read_valid(args.data)[0]
    whole = table.probs[:, 0]
    stubborn = stubborn_normals(table)
    groups = {
        "tumour": table.labels == 1,
        "normal": table.labels == 0,
        "stubborn normal": stubborn,
    }
    say(f"# stubborn normal: a normal patch at p >= {STUBBORN_P} in >= {STUBBORN_VARIANTS} of its 8 variants")
    say(f"# {model.version}: {len(images)} valid patches, whole {side} px -> centre kept, rest mirrored")
    for keep in KEEP:
        centre = model.predict(np.stack([centre_only(im, keep, side) for im in images]))
        say(f"central {keep} px kept:              n  mean p whole -> centre   share whole -> centre")
        for name, pick in groups.items():
            say(group_line(name, whole[pick], centre[pick]))
        pairs = " ".join(f"{a:.2f}>{b:.2f}" for a, b in zip(whole[stubborn], centre[stubborn], strict=True))
        say(f"  stubborn, each (whole>centre): {pairs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
