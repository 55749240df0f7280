"""Jobs for :func:`training.parallel.run` in the tests: module-level, so spawned ranks can import
them. Each returns what rank 0 holds at its end."""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from training import parallel
from training.train import focused_cross_entropy

BATCH = 7  # an odd batch: rank 0 gets 4 patches, rank 1 gets 3


def small_net(batch_norm: bool) -> nn.Module:
    """A seeded conv net (with a batch norm or without one)."""
    torch.manual_seed(0)
    norm: list[nn.Module] = [nn.BatchNorm2d(4)] if batch_norm else []
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The same seeded batch of 7 small images and labels on every rank."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 9, 9, generator=g), torch.randint(0, 2, (BATCH,), generator=g)


def combined_step(ranks: parallel.Ranks, batch_norm: bool, focus: float = 0.0) -> dict[str, torch.Tensor]:
    """One forward and backward pass on this rank's share (the trainer's loss, with ``--negative-focus
    focus``), then :func:`parallel.combine_step`; the gradients and batch-norm statistics every rank
    then holds (checked equal on all ranks)."""
    model = small_net(batch_norm)
    x, y = batch()
    idx = ranks.share(torch.arange(BATCH).numpy())
    loss = focused_cross_entropy(model(x[idx]), y[idx], 0.0, focus, across_ranks=True)
    loss.backward()  # type: ignore[no-untyped-call]
    parallel.combine_step(model, len(idx), BATCH)
    for p in model.parameters():  # gradients as weights: every rank must hold the same ones
        assert p.grad is not None
        p.data.copy_(p.grad)
    parallel.check_identical(model)
    out = {f"grad.{name}": p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    out |= {f"buffer.{name}": b.clone() for name, b in model.named_buffers()}
    return out


def diverged(ranks: parallel.Ranks) -> None:
    """Ranks whose weights differ: :func:`parallel.check_identical` must refuse them."""
    model = small_net(batch_norm=False)
    with torch.no_grad():
        next(model.parameters())[0, 0, 0, 0] += ranks.rank
    parallel.check_identical(model)


def rank_one_fails(ranks: parallel.Ranks) -> None:
    """Rank 1 fails before the first collective; rank 0 then waits on it."""
    if ranks.rank == 1:
        raise ValueError("rank 1 cannot go on")
    parallel.sum_over_ranks([1.0])


def summed(ranks: parallel.Ranks, value: float) -> list[float]:
    """``[rank + value, 1]`` summed over the ranks."""
    return parallel.sum_over_ranks([ranks.rank + value, 1.0])


def idle_wait(ranks: parallel.Ranks, seconds: float) -> float:
    """Rank 0 sleeps while rank 1 waits in a collective: rank 1's CPU seconds spent waiting."""
    start = time.process_time()
    if ranks.lead:
        time.sleep(seconds)
    parallel.sum_over_ranks([0.0])
    spent = time.process_time() - start if not ranks.lead else 0.0
    return parallel.sum_over_ranks([spent])[0]


class LoadsNowhereElse:
    """An argument that pickles here but cannot be loaded in another process, as a job whose
    module a spawned rank cannot import."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_load_only_in, (os.getpid(),))


def _load_only_in(pid: int) -> LoadsNowhereElse:
    if os.getpid() != pid:
        raise ImportError("this argument cannot be loaded in another process")
    return LoadsNowhereElse()
