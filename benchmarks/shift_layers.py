"""Where does a one-pixel shift enter the network? Layer by layer, on a training checkpoint.

Every 96 px PCam patch gives two 95 px crops one pixel apart. For each layer of the exported
plain network (stem, each inverted-residual block, the last 1x1 conv), the feature maps of both
crops are averaged over the layer's circular disc, and the relative change
``|pooled(shifted) - pooled(crop)| / |pooled(crop)|`` is printed, with the same for a random
±2 grey-level noise as a yardstick. A shift-invariant layer would show no change; a jump after
a subsampling is aliasing. ``--blur K`` swaps the anti-aliasing blur of the trained network for
a K-tap one (no retraining) to see what a wider low-pass would do.

Run from the repository root (needs the training extra):
  python benchmarks/shift_layers.py ~/.cache/equitriage/runs/long-c4-aa/best.pt [--blur 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.preprocess import circular_mask  # noqa: E402
from training.batches import make_batch  # noqa: E402
from training.data import load_patches  # noqa: E402
from training.export import load_checkpoint, to_plain  # noqa: E402
from training.layers import BlurPool, binomial_kernel  # noqa: E402
from training.metrics import auc  # noqa: E402
from training.train import valid_halves  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "pcam" / "pcam_train_valid.zip"


def say(text: str) -> None:
    """Benchmark output goes to stdout."""
    print(text)  # noqa: T201


def widen_blurs(model: torch.nn.Module, taps: int) -> None:
    """Replace every anti-aliasing blur by a ``taps``-tap binomial on the same sampling grid."""
    for m in model.modules():
        if isinstance(m, BlurPool):
            m.padding += (taps - m.kernel.shape[-1]) // 2
            m.kernel = binomial_kernel(taps)[None, None].repeat(m.channels, 1, 1, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    p.add_argument("--patches", type=int, default=300, help="selection-half patches")
    p.add_argument("--blur", type=int, choices=(3, 5, 7), default=None, help="swap in a K-tap blur")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    model, ckpt = load_checkpoint(args.checkpoint)
    plain = to_plain(model).eval()
    if args.blur:
        widen_blurs(plain, args.blur)
    valid = load_patches(args.data, args.cache_dir)["valid"]
    select, _ = valid_halves(valid, ckpt["train_config"]["split_seed"])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(select), min(args.patches, len(select)), replace=False)
    images, labels = select.images[pick], select.labels[pick]
    mean, std = ckpt["mean"], ckpt["std"]

    layers: dict[str, torch.nn.Module] = {"stem": plain.stem}
    layers |= {f"block{i}": b for i, b in enumerate(plain.blocks)}
    layers["last"] = plain.last
    maps: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        layer.register_forward_hook(lambda _m, _i, out, name=name: maps.__setitem__(name, out.detach()))

    def run(crops: NDArray[np.uint8]) -> tuple[NDArray[np.float64], dict[str, torch.Tensor]]:
        with torch.no_grad():
            prob = torch.softmax(plain(make_batch(np.ascontiguousarray(crops), 95, mean, std)), 1)[:, 1]
        pooled = {}
        for name, f in maps.items():
            s = f.shape[-1]
            disc = torch.from_numpy(circular_mask(s, s / 2).astype("float32"))
            pooled[name] = (f * disc).sum((2, 3)) / disc.sum()
        return prob.numpy().astype(np.float64), pooled

    p0, f0 = run(images[:, :95, :95])
    noisy = np.clip(images[:, :95, :95].astype(int) + rng.integers(-2, 3, (len(images), 95, 95, 3)), 0, 255)
    cases = {
        "shift y+1": images[:, 1:96, :95],
        "shift x+1": images[:, :95, 1:96],
        "noise +-2": noisy.astype(np.uint8),
    }
    blur = f", blur {args.blur} swapped in" if args.blur else ""
    say(f"# {args.checkpoint} (epoch {ckpt.get('epoch')}{blur}), {len(images)} selection patches")
    say(f"# AUC of the crops: {auc(labels, p0):.4f}")
    say("case        mean|dp|  flips   " + "  ".join(f"{n:>7s}" for n in layers))
    for case, crops in cases.items():
        p1, f1 = run(crops)
        rel = [float((torch.norm(f1[n] - f0[n], dim=1) / torch.norm(f0[n], dim=1)).mean()) for n in layers]
        flips = np.mean((p1 > 0.5) != (p0 > 0.5))
        say(
            f"{case:10s}  {np.abs(p1 - p0).mean():.4f}   {flips:.3f}   " + "  ".join(f"{r:7.3f}" for r in rel)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
