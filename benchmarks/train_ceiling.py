"""How fast a training step could be on this CPU: the equivariant net against its convolutions alone.

    python benchmarks/train_ceiling.py [--group 8] [--width 0.5] [--expansion 6] [--antialias]
        [--batch 64] [--cores 2] [--steps 8]

Three networks take the same forward and backward pass (cross-entropy, no optimiser, no data
preparation) on random 95 x 95 input:

- ``e2cnn``: the equivariant net as ``python -m training train`` builds it (filters expanded from
  the steerable basis on every step, field-shared batch norm);
- ``plain``: the conventional MobileNetV2 with the same convolution shapes (what the equivariant
  net exports to), with its batch norm and ReLUs;
- ``convs only``: that plain net with batch norm and ReLU taken out, so only the convolutions, the
  pooling and the classifier are left. No training step of this architecture can be faster on
  these kernels: it is the ceiling the memory-bound layers (batch norm, ReLU, residual adds) and
  e2cnn's bookkeeping bring each step down from.

Each is measured in the two layouts a run can use on ``--cores`` cores: one process with all of
them as threads (``train --threads N``), and one single-thread process per core, each stepping
on its share of the batch at the same time (``train --processes N``). Patches/s are the batch
over the median step time (summed over processes); GFLOP/s counts a forward and a backward pass
as three times the forward multiply-adds.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from training.allocator import keep_freed_memory
from training.complexity import count_macs
from training.config import ArchConfig
from training.mobilenet import MobileNetV2
from training.models import build_model

NETS = ("e2cnn", "plain", "convs only")


def network(arch: ArchConfig, kind: str) -> nn.Module:
    """One of :data:`NETS` for ``arch``, in training mode."""
    if kind == "e2cnn":
        net: nn.Module = build_model(arch)
    else:
        net = MobileNetV2(arch, pool_order=arch.group_order)
        if kind == "convs only":
            for module in list(net.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, nn.BatchNorm2d | nn.ReLU):
                        setattr(module, name, nn.Identity())
    return net.train()


def stepper(arch: ArchConfig, kind: str, batch: int) -> Callable[[], None]:
    """One forward and backward pass of ``batch`` random patches through a fresh ``kind`` net."""
    torch.manual_seed(0)
    net = network(arch, kind)
    x = torch.randn(batch, 3, arch.input_size, arch.input_size)
    y = torch.randint(0, arch.num_classes, (batch,))

    def step() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()  # type: ignore[no-untyped-call]

    return step


def median_seconds(step: Callable[[], None], steps: int, warmup: int = 2) -> float:
    """Median wall time of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_seconds(arch: ArchConfig, kind: str, batch: int, threads: int, steps: int) -> float:
    """Median seconds of one forward and backward pass of ``batch`` patches on ``threads`` threads."""
    torch.set_num_threads(threads)
    return median_seconds(stepper(arch, kind, batch), steps)


def _rank(arch: ArchConfig, kind: str, batch: int, steps: int, barrier: Any) -> float:
    keep_freed_memory()
    torch.set_num_threads(1)
    step = stepper(arch, kind, batch)
    step()  # built and warm before the others start timing
    step()
    barrier.wait()
    return median_seconds(step, steps, warmup=0)


def parallel_rate(arch: ArchConfig, kind: str, batch: int, processes: int, steps: int) -> float:
    """Patches/s of ``processes`` single-thread processes stepping on shares of ``batch`` at once."""
    share = batch // processes
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            seconds = pool.starmap(_rank, [(arch, kind, share, steps, barrier)] * processes)
    return share * processes / max(seconds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--expansion", type=int, default=6)
    p.add_argument("--antialias", action="store_true")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()
    if args.cores < 1 or args.batch % args.cores:
        p.error("--batch must split evenly over --cores (1 or more)")
    keep_freed_memory()
    arch = ArchConfig(
        arch="equivariant",
        group_order=args.group,
        width=args.width,
        expansion=args.expansion,
        antialias=args.antialias,
    )
    macs = count_macs(MobileNetV2(arch, pool_order=arch.group_order), arch.input_size)
    out = sys.stdout
    out.write(
        f"{arch.group_name}, width {args.width}, expansion {args.expansion}, "
        f"{'anti-aliased' if args.antialias else 'plain strides'}, {macs / 1e6:.1f} M MACs a patch, "
        f"batch {args.batch}; forward + backward, patches/s (GFLOP/s)\n"
    )
    layouts = (f"1 process x {args.cores} threads", f"{args.cores} processes x 1 thread")
    out.write(f"{'net':<12}{layouts[0]:>26}{layouts[1]:>26}\n")
    for kind in NETS:
        threaded = args.batch / step_seconds(arch, kind, args.batch, args.cores, args.steps)
        split = parallel_rate(arch, kind, args.batch, args.cores, args.steps)
        cells = [f"{r:.1f} ({6 * macs * r / 1e9:.0f})" for r in (threaded, split)]
        out.write(f"{kind:<12}{cells[0]:>26}{cells[1]:>26}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
