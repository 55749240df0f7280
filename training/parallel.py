"""Data-parallel training on one machine's cores: N processes, each a share of every batch.

On a CPU a training step of these small networks scales poorly across threads (small
convolutions, memory-bound batch norm), so two processes of one thread each step faster together
than one process of two threads (``docs/results.md``). Each process (a *rank*) builds the same
model, prepares and steps on its own share of every batch, and before every optimiser step the
ranks sum their gradients, weighted by their shares, and average their batch-norm running
statistics (``torch.distributed``, gloo on loopback). So every rank takes the same step from the
same weights and the weights stay identical; :func:`check_identical` verifies that once an epoch.
What differs from one process: batch norm normalises each share by its own statistics, as
data-parallel training on several GPUs does without synchronised batch norm.

Rank 0 is the calling process: it logs, evaluates and writes the checkpoints. The other ranks are
spawned processes that log warnings only and ignore Ctrl-C; the caller stops them when it stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch import nn

log = logging.getLogger(__name__)

T = TypeVar("T")
RUNNING_STATS = ("running_mean", "running_var")  # the batch-norm buffers a step updates
TIMEOUT = timedelta(minutes=30)  # longest wait on another rank (rank 0 evaluates between epochs)
STOP_GRACE_S = 30.0  # how long a finished or interrupted run waits for its other ranks


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one training run."""

    rank: int = 0
    size: int = 1

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ValueError(f"rank {self.rank} of {self.size} processes")

    @property
    def lead(self) -> bool:
        """True for the rank that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def share(self, idx: NDArray[np.int64]) -> NDArray[np.int64]:
        """This rank's share of a batch's patch indices: every ``size``-th, from ``rank``."""
        return idx[self.rank :: self.size]


def usable_batch(n: int, processes: int) -> bool:
    """Whether a batch of ``n`` patches gives every process at least one."""
    return n >= processes


def _running_stats(model: nn.Module) -> list[torch.Tensor]:
    return [b for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in RUNNING_STATS]


def combine_step(model: nn.Module, share: int, total: int) -> None:
    """Turn this rank's gradients (of a loss averaged over its ``share`` of ``total`` patches) into
    the gradients of the loss averaged over all ``total``, and average the batch-norm running
    statistics over the ranks: one all-reduce. Every rank ends with the same values."""
    params = [p for p in model.parameters() if p.requires_grad]
    stats = _running_stats(model)
    size = dist.get_world_size()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat(
        [*(g.reshape(-1) * (share / total) for g in grads), *(s.reshape(-1) / size for s in stats)]
    )
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
    for s in stats:
        n = s.numel()
        s.copy_(flat[offset : offset + n].view_as(s))
        offset += n


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """``values`` summed element-wise over the ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return [float(v) for v in t]


def mean_over_ranks(values: torch.Tensor) -> float:
    """The mean of ``values``' elements over every rank's ``values`` together."""
    total, count = sum_over_ranks([float(values.sum()), float(values.numel())])
    return total / count


def broadcast_model(model: nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank."""
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


def check_identical(model: nn.Module) -> None:
    """Raise RuntimeError unless every rank holds bit-identical parameters (their per-tensor
    float64 sums, compared exactly: one all-reduce each for the largest and smallest)."""
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    high, low = sums.clone(), sums.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    if not torch.equal(high, low):
        raise RuntimeError("the training processes no longer hold the same weights: a bug; please report it")


def _join(init: str, ranks: Ranks) -> None:
    dist.init_process_group("gloo", init_method=init, rank=ranks.rank, world_size=ranks.size, timeout=TIMEOUT)


def _child(
    fn: Callable[..., Any], ranks: Ranks, init: str, level: int, args: tuple[Any, ...], started: Any
) -> None:
    """Entry point of a spawned rank: its own logging, Ctrl-C left to rank 0. ``started`` is set
    once it runs, i.e. once ``fn`` and ``args`` were unpickled (imported) here."""
    started.set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=max(level, logging.WARNING),
        format=f"%(asctime)s %(levelname)s rank {ranks.rank} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from training.allocator import keep_freed_memory

    keep_freed_memory()
    _join(init, ranks)
    try:
        fn(ranks, *args)
    except Exception:
        log.exception("training rank %d failed", ranks.rank)
        raise SystemExit(1) from None
    finally:
        dist.destroy_process_group()


def run(fn: Callable[..., T], processes: int, *args: Any) -> T:
    """``fn(ranks, *args)`` in ``processes`` processes joined in one gloo group; rank 0 runs here
    and its result is returned. ``fn`` and ``args`` must be picklable (a module-level function).

    A failure of any rank stops the run: rank 0's own exception propagates; another rank's makes
    rank 0's next collective fail, and a RuntimeError names the rank.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if processes == 1:
        return fn(Ranks(), *args)
    if not dist.is_available() or not dist.is_gloo_available():
        raise RuntimeError("this PyTorch build has no gloo backend: train with --processes 1")
    context = multiprocessing.get_context("spawn")  # forking a process that has run OpenMP can hang
    level = logging.getLogger().getEffectiveLevel()
    with tempfile.TemporaryDirectory(prefix="equitriage-ranks-") as tmp:
        init = Path(tmp, "rendezvous").as_uri()
        started = [context.Event() for _ in range(1, processes)]
        children = [
            context.Process(
                target=_child,
                args=(fn, Ranks(rank, processes), init, level, args, started[rank - 1]),
                name=f"training rank {rank}",
                daemon=True,
            )
            for rank in range(1, processes)
        ]
        for child in children:
            child.start()
        finished = False
        try:
            _wait_started(children, started)
            _join(init, Ranks(0, processes))
            result = fn(Ranks(0, processes), *args)
            finished = True
            return result
        except RuntimeError as exc:  # gloo reports a rank that died as a failed collective
            failed = _failed(children)
            if failed:
                raise RuntimeError(f"{failed} stopped: see its error above") from exc
            raise
        finally:
            _stop(children, wait=finished)
            if dist.is_initialized():
                dist.destroy_process_group()


def _stop(children: Sequence[multiprocessing.process.BaseProcess], wait: bool) -> None:
    """End the other ranks: after a finished run, give them time to finish too; after a failure
    or an interrupt, at once (they would wait for rank 0 until the timeout)."""
    for child in children:
        if wait:
            child.join(STOP_GRACE_S)
        if child.is_alive():
            child.terminate()
        child.join()


def _wait_started(children: Sequence[multiprocessing.process.BaseProcess], started: Sequence[Any]) -> None:
    """Wait until every spawned rank runs; raise RuntimeError naming one that ended first (it
    could not import the job, say), rather than wait for it at the rendezvous until the timeout."""
    while not all(event.is_set() for event in started):
        for child, event in zip(children, started, strict=True):
            if not event.is_set() and child.exitcode is not None:
                raise RuntimeError(f"{child.name} stopped before it started (exit code {child.exitcode})")
        time.sleep(0.05)


def _failed(children: Sequence[multiprocessing.process.BaseProcess]) -> str:
    """The name and exit code of the first child that has ended with an error, or ''."""
    for child in children:
        child.join(1.0)
        if child.exitcode not in (None, 0):
            return f"{child.name} (exit code {child.exitcode})"
    return ""
