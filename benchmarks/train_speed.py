"""Training speed of both networks, one step taken apart: data preparation, forward, backward and
optimiser, as patches/s.

    python benchmarks/train_speed.py [--threads 1] [--batch 64] [--steps 6] [--group 8] [--width 0.5]
        [--expansion 6] [--antialias] [--recipe plain|robust] [--bf16] [--malloc default|keep]
        [--channels-last] [--data ZIP] [--cache-dir DIR]

Real PCam patches are prepared exactly as ``python -m training train`` prepares them (the recipe's
augmentation included); the model steps on them with AdamW. Each phase is timed separately over
``--steps`` steps after two warm-up steps, so the figures show where a step's time goes. The
``end to end`` column is what a training run sees when preparation overlaps the step in its
thread (``max`` of preparation and step, on a machine with a core to spare; on a busy one it is
their sum). ``--malloc keep`` measures with the malloc settings ``python -m training train`` uses
(:func:`training.allocator.keep_freed_memory`); ``default`` with glibc's own. ``--channels-last``
steps both nets on channels-last memory (not what training uses: e2cnn's field-shared batch norm
views the channels as fields, which needs channel-first memory, so the equivariant net copies).
``--bf16`` measures bfloat16 autocast even on a CPU without native bfloat16, where it is emulated
and slow (the header says which; ``train --bf16`` runs float32 there: ``training.precision``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F  # noqa: N812

from training.allocator import keep_freed_memory
from training.batches import channel_stats, make_batch
from training.config import ArchConfig
from training.data import load_patches
from training.models import build_model
from training.precision import native_bfloat16
from training.train import ROBUST_RECIPE, TrainConfig


def measure(
    arch: ArchConfig,
    images: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    steps: int,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    model = build_model(arch)
    model.to(memory_format=memory_format)  # type: ignore[call-overload]  # an untyped overload
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mean, std = channel_stats(images[:512], arch.input_size)
    rng = np.random.default_rng(0)
    aug = cfg.augment()
    n = cfg.batch_size
    times: dict[str, list[float]] = {"prepare": [], "forward": [], "backward": [], "optimiser": []}
    for step in range(steps + 2):
        idx = np.sort(rng.choice(len(images), size=n, replace=False))
        t0 = time.perf_counter()
        x = make_batch(images[idx], arch.input_size, mean, std, rng, aug)
        x = x.contiguous(memory_format=memory_format)
        y = torch.from_numpy(labels[idx])
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step >= 2:
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key].append(value)
    med = {k: statistics.median(v) for k, v in times.items()}
    step_s = med["forward"] + med["backward"] + med["optimiser"]
    return {
        **{k: n / v for k, v in med.items()},
        "step": n / step_s,
        "serial": n / (step_s + med["prepare"]),
        "overlapped": n / max(step_s, med["prepare"]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--expansion", type=int, default=6, help="inverted-residual expansion ratio")
    p.add_argument("--antialias", action="store_true")
    p.add_argument("--recipe", choices=["plain", "robust"], default="plain")
    p.add_argument("--bf16", action="store_true", help="also measure under bfloat16 autocast (train --bf16)")
    p.add_argument("--malloc", choices=["default", "keep"], default="keep", help="glibc malloc settings")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory (see above)")
    p.add_argument("--data", default="../shared/data/pcam/pcam_train_valid.zip")
    p.add_argument("--cache-dir", default="runs/cache")
    args = p.parse_args()
    kept = args.malloc == "keep" and keep_freed_memory()
    torch.set_num_threads(args.threads)
    train = load_patches(Path(args.data), Path(args.cache_dir))["train"]
    images, labels = np.asarray(train.images[:4096]), train.labels[:4096]
    recipe = ROBUST_RECIPE if args.recipe == "robust" else {}
    cfg = TrainConfig(data=args.data, out_dir="", batch_size=args.batch, **recipe)
    out = sys.stdout
    strides = "anti-aliased" if args.antialias else "plain strides"
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    out.write(
        f"{args.threads} thread(s), batch {args.batch}, width {args.width}, expansion {args.expansion}, "
        f"recipe {args.recipe}, {strides}, malloc {'keep' if kept else 'default'}, "
        f"{'channels-last' if args.channels_last else 'channel-first'} memory, "
        f"native bfloat16 {'yes' if native_bfloat16() else 'no (train --bf16 runs float32 here)'}; "
        f"patches/s (median of {args.steps} steps)\n"
    )
    header = ("net", "prepare", "forward", "backward", "optim", "step", "serial", "overlap")
    out.write("{:<22}{:>9}{:>9}{:>9}{:>8}{:>8}{:>8}{:>8}\n".format(*header))
    for name in ("conventional", "equivariant"):
        arch = ArchConfig(
            arch=name,
            group_order=args.group,
            width=args.width,
            expansion=args.expansion,
            antialias=args.antialias,
        )
        for bf16 in (False, True) if args.bf16 else (False,):
            r = measure(arch, images, labels, dataclasses.replace(cfg, bf16=bf16), args.steps, memory_format)
            label = f"{name} {arch.group_name}" + (" bf16" if bf16 else "")
            out.write(
                f"{label:<22}{r['prepare']:>9.0f}{r['forward']:>9.0f}{r['backward']:>9.0f}"
                f"{r['optimiser']:>8.0f}{r['step']:>8.1f}{r['serial']:>8.1f}{r['overlapped']:>8.1f}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
