"""The worker side of a cluster batch: what each Dask worker process runs (see :mod:`engine.cluster`).

A worker gets a :class:`ClusterRequest` (paths and settings, never open handles), loads the model
once per process, proves it runs this engine version and this model (sha256) and sees the output
folder (:func:`check_worker`), and analyses each slide with :func:`engine.batch.analyse_job`, the
very function of the local batch (:func:`analyse_on_worker`). This module is also the workers'
Dask preload (:func:`dask_setup`), so it imports no Dask at module level.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import __version__
from engine.batch import SlideJob, SlideOutcome, analyse_job
from engine.errors import ClusterError, Remedy, WorkerMismatchError
from engine.identity import LOCK_LEASE_S, LOCK_REFRESH_S, ResultLock
from engine.model import Model
from engine.pipeline import AnalysisParams

LEASE_POLL_S = 1.0  # how often a worker looks again at a slide another machine holds


@dataclass(frozen=True)
class ClusterRequest:
    """What every worker needs to analyse any slide of the batch: paths and settings, no handles."""

    out_dir: Path
    model_path: Path
    model_sha256: str
    params: AnalysisParams
    mpp: float | None = None
    default_mpp: float | None = None
    resume: bool = True
    threads: int | None = None  # inference threads per slide; None: see threads_per_host
    # Filled in by run_cluster_batch when ``threads`` is None: each host's cores divided by the
    # slides it runs at once (its workers' threads together), so no machine is oversubscribed.
    threads_per_host: tuple[tuple[str, int], ...] = ()
    engine_version: str = __version__
    token: str = ""  # names the probe file that proves a worker sees the output folder

    @classmethod
    def for_model(cls, model: Model, out_dir: Path, params: AnalysisParams, **kwargs: Any) -> ClusterRequest:
        return cls(
            out_dir=Path(os.path.abspath(out_dir)),
            model_path=Path(os.path.abspath(model.path)),
            model_sha256=model.sha256,
            params=params,
            token=uuid.uuid4().hex,
            **kwargs,
        )

    @property
    def probe(self) -> Path:
        return self.out_dir / f".equitriage-cluster-{self.token}"


# Per worker process: the loaded model, and the runs whose output folder it has seen.
_MODELS: dict[tuple[str, int | None], Model] = {}
_SEEN: set[str] = set()
_LOCK = threading.Lock()


def _where() -> str:
    try:
        from distributed import get_worker

        return f"worker {get_worker().address}"
    except (ImportError, ValueError):
        return f"worker on {platform.node()} (pid {os.getpid()})"


def usable_cores() -> int:
    """The cores this process may run on (a Slurm job's share, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _worker_threads(request: ClusterRequest) -> int | None:
    if request.threads is not None:
        return request.threads
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    host = worker.address.rsplit(":", 1)[0].split("://")[-1]
    per_host = dict(request.threads_per_host)
    if host in per_host:
        return per_host[host]
    return max(1, usable_cores() // max(1, int(worker.state.nthreads)))  # a worker that joined late


def worker_model(request: ClusterRequest) -> Model:
    """The request's model in this worker process, loaded once; raise if it is not the client's."""
    if __version__ != request.engine_version:
        raise WorkerMismatchError(
            f"{_where()} runs EquiTriage {__version__}, this client {request.engine_version}"
        )
    threads = _worker_threads(request)
    key = (str(request.model_path), threads)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None or model.sha256 != request.model_sha256:
            model = Model.load(request.model_path, threads=threads)
            _MODELS[key] = model
    if model.sha256 != request.model_sha256:
        raise WorkerMismatchError(
            f"{_where()}: the model at {request.model_path} is not the client's "
            f"(sha256 {model.sha256[:12]}…, the client's {request.model_sha256[:12]}…)"
        )
    return model


def _check_shared(request: ClusterRequest) -> None:
    if request.token in _SEEN:
        return
    if not request.probe.is_file():
        raise ClusterError(
            f"{_where()} does not see the output folder {request.out_dir}", Remedy.SHARE_FOLDERS
        )
    _SEEN.add(request.token)


def check_worker(request: ClusterRequest) -> str:
    """Run on every worker before any slide: same engine and model, output folder shared."""
    worker_model(request)
    _check_shared(request)
    return __version__


def analyse_on_worker(job: SlideJob, request: ClusterRequest) -> SlideOutcome:
    """One slide on a worker: the local batch's :func:`engine.batch.analyse_job`.

    A slide locked by another machine (a worker there that died mid-slide, whose lease has not yet
    run out) is waited for, up to one lease, then taken over.
    """
    model = worker_model(request)
    _check_shared(request)
    deadline = time.monotonic() + LOCK_LEASE_S + LOCK_REFRESH_S
    while True:
        outcome = analyse_job(
            job,
            request.out_dir,
            model,
            request.params,
            mpp=request.mpp,
            default_mpp=request.default_mpp,
            resume=request.resume,
        )
        if outcome.remedy is not Remedy.WAIT_FOR_OTHER_RUN or time.monotonic() > deadline:
            return outcome
        if not ResultLock(request.out_dir / job.name).held_elsewhere():
            return outcome
        time.sleep(LEASE_POLL_S)


def dask_setup(worker: Any) -> None:
    """Dask preload hook, run as each local worker process starts (also after a restart).

    Ctrl-C on a terminal reaches every process of the group: the client alone handles it (it stops
    the batch and closes the cluster), so its workers ignore SIGINT instead of dying mid-write
    with a traceback.
    """
    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)
