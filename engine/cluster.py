"""Analyse a slide archive on a Dask cluster: a local one on this machine, or one on several.

Workers get paths (slides, model and output folder on a filesystem every worker sees, at the
same path), never open handles, and run :func:`engine.batch.analyse_job`, the very function of
the local batch, so each slide's outputs, locks and atomic writes are the same. The client
rebuilds ``summary.csv`` from the folder as slides finish (at most every
:data:`SUMMARY_EVERY_S`, since a rebuild reads every result) and always at the end.

- A worker killed mid-slide costs that slide's work only: the scheduler gives the slide to another
  worker, and after :data:`MAX_WORKER_DEATHS` deaths it is reported as failed. Results are written
  atomically with ``summary.json`` last, so a dead worker leaves nothing that looks complete.
- Every worker proves it runs this engine version and this model (sha256), and sees the output
  folder, before any slide (:func:`check_worker`), and again for each slide (workers may join late).
- A Dask scheduler runs whatever code its clients send: the local cluster listens on the loopback
  interface only, and a plain-TCP scheduler elsewhere is refused unless explicitly allowed
  (:func:`check_address`); use ``tls://`` with certificates (:func:`tls_security`).

Dask is an optional extra (``equitriage[cluster]``): it is imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import platform
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import __version__
from engine.batch import SlideJob, SlideOutcome, analyse_job, write_batch_summary
from engine.errors import (
    CancelledError,
    ClusterError,
    EquiTriageError,
    Remedy,
    WorkerMismatchError,
)
from engine.identity import LOCK_LEASE_S, LOCK_REFRESH_S, ResultLock
from engine.model import Model
from engine.pipeline import AnalysisParams

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_WORKER_DEATHS = 2  # the scheduler's allowed-failures: a slide is tried at most 3 times
TASK_RETRIES = 1  # an unexpected exception (a bug, not an EquiTriageError) is retried once
POLL_S = 0.05
SUMMARY_EVERY_S = 5.0  # summary.csv is rebuilt at most this often while a cluster batch runs
LEASE_POLL_S = 1.0  # how often a worker looks again at a slide another machine holds
WORKER_WAIT_S = 60.0
# For a local cluster (a remote scheduler has its own configuration: see the README).
LOCAL_CONFIG: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": MAX_WORKER_DEATHS,
    "distributed.scheduler.worker-saturation": 1.0,  # a worker holds only the slides it is analysing
    "distributed.worker.preload": ["engine.cluster"],  # dask_setup below, in every worker process
}


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


def threads_per_host(client: Any) -> tuple[tuple[str, int], ...]:
    """Inference threads per slide on each host: its cores / the slides its workers run at once."""
    cores = client.run(usable_cores)
    slots: dict[str, int] = {}
    most: dict[str, int] = {}
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = str(info["host"])
        slots[host] = slots.get(host, 0) + int(info["nthreads"])
        most[host] = max(most.get(host, 1), int(cores.get(address, 1)))
    return tuple(sorted((host, max(1, most[host] // max(1, n))) for host, n in slots.items()))


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


def _need_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError("Dask is not installed", Remedy.INSTALL_CLUSTER) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def check_address(address: str, insecure: bool = False) -> str:
    """The scheduler address to connect to; a plain-TCP one off loopback needs ``insecure``."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    scheme = scheme.lower()
    if scheme not in ("tcp", "tls") or not rest:
        raise ClusterError(f"{address}: not a scheduler address (tls://HOST:PORT or tcp://HOST:PORT)")
    host = rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest
    if scheme == "tcp" and not _is_loopback(host) and not insecure:
        raise ClusterError(
            f"{address}: a plain-TCP scheduler on the network lets anyone who reaches it run code "
            "and read patient slides",
            Remedy.SECURE_SCHEDULER,
        )
    return f"{scheme}://{rest}"


def tls_security(ca_file: Path | None, cert: Path | None, key: Path | None) -> Any:
    """A :class:`distributed.security.Security` for ``tls://`` (files given, or Dask's config)."""
    _need_dask()
    from distributed.security import Security

    given = [p for p in (ca_file, cert, key) if p is not None]
    if given:
        if len(given) != 3:
            raise ClusterError("TLS needs a CA file, a certificate and its key, all three")
        for path in given:
            if not path.is_file():
                raise ClusterError(f"{path}: no such certificate or key file", Remedy.CHECK_PATH)
        return Security(
            tls_ca_file=str(ca_file),
            tls_client_cert=str(cert),
            tls_client_key=str(key),
            require_encryption=True,
        )
    security = Security()  # distributed.comm.tls.* from Dask's configuration
    if not security.tls_ca_file or not security.tls_client_cert:
        raise ClusterError("a tls:// scheduler needs certificates: a CA file, a certificate and its key")
    return security


def dask_setup(worker: Any) -> None:
    """Dask preload hook, run as each local worker process starts (also after a restart).

    Ctrl-C on a terminal reaches every process of the group: the client alone handles it (it stops
    the batch and closes the cluster), so its workers ignore SIGINT instead of dying mid-write
    with a traceback.
    """
    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def local_cluster(workers: int, verbose: bool = False) -> Iterator[Any]:
    """A :class:`distributed.Client` on ``workers`` worker processes of one thread each, on loopback.

    The worker processes' own Dask logging is silenced unless ``verbose``: on Ctrl-C a worker may
    log a traceback for a heartbeat the closing scheduler no longer answers, and a slide's own
    failure reaches the client as its outcome anyway.
    """
    _need_dask()
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(LOCAL_CONFIG):
        try:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host=LOOPBACK,  # scheduler, nannies and workers: nothing listens beyond this machine
                protocol="tcp://",
                dashboard_address=None,
                worker_dashboard_address=None,
                silence_logs=logging.ERROR if verbose else logging.CRITICAL,
            )
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise ClusterError(f"cannot start {workers} local Dask workers ({exc})") from exc
        try:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


@contextlib.contextmanager
def remote_cluster(address: str, security: Any = None, timeout_s: float = 30.0) -> Iterator[Any]:
    """A :class:`distributed.Client` of the scheduler at ``address`` (checked by :func:`check_address`)."""
    _need_dask()
    from distributed import Client

    try:
        client = Client(address, security=security, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the scheduler at {address} ({exc})") from exc
    try:
        yield client
    finally:
        client.close()


def check_workers(client: Any, request: ClusterRequest, wait_s: float = WORKER_WAIT_S) -> int:
    """Wait for a worker, then prove each worker fit (:func:`check_worker`); return how many."""
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError:
        raise ClusterError(f"no worker joined the scheduler within {wait_s:.0f} s") from None
    results = client.run(check_worker, request)
    return len(results)


def run_cluster_batch(
    client: Any,
    jobs: Iterable[SlideJob],
    request: ClusterRequest,
    on_done: Callable[[SlideOutcome], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[SlideOutcome]:
    """:func:`engine.batch.run_batch` on a cluster: the same outcomes, in order of completion.

    A slide that fails is a ``failed`` outcome, as in the local batch, and so is one whose workers
    kept dying; a broken output folder or a mismatched worker stops the batch (raises).
    """
    jobs = list(jobs)
    try:
        request.probe.write_bytes(b"")
    except OSError as exc:
        from engine.outputs import output_error

        raise output_error(request.probe, exc) from exc
    try:
        check_workers(client, request)
        if request.threads is None:
            request = dataclasses.replace(request, threads_per_host=threads_per_host(client))
            log.debug("inference threads per slide: %s", dict(request.threads_per_host))
        return _gather(client, jobs, request, on_done, cancel)
    finally:
        with contextlib.suppress(OSError):
            request.probe.unlink()


def _gather(
    client: Any,
    jobs: list[SlideJob],
    request: ClusterRequest,
    on_done: Callable[[SlideOutcome], None] | None,
    cancel: threading.Event | None,
) -> list[SlideOutcome]:
    pending: dict[Any, SlideJob] = {}
    for i, job in enumerate(jobs):
        remote_job = SlideJob(Path(os.path.abspath(job.path)), job.name)  # workers may run elsewhere
        future = client.submit(
            analyse_on_worker,
            remote_job,
            request,
            key=f"equitriage-slide-{i}-{request.token}",
            pure=False,
            retries=TASK_RETRIES,
        )
        pending[future] = job
    outcomes: list[SlideOutcome] = []
    summary = _SummaryWriter(request.out_dir)
    try:
        while pending:
            if cancel is not None and cancel.is_set():
                raise CancelledError("batch cancelled")
            done = [f for f in pending if f.done()]
            if not done:
                time.sleep(POLL_S)
                continue
            for future in done:
                job = pending.pop(future)
                outcome = dataclasses.replace(_outcome(future, job), job=job)
                outcomes.append(outcome)
                summary.update(outcomes)
                if on_done:
                    on_done(outcome)
    except BaseException:
        with contextlib.suppress(EquiTriageError):  # the first error is the one to report
            summary.flush(outcomes)
        raise
    finally:
        if pending:
            client.cancel(list(pending))
    summary.flush(outcomes)
    return outcomes


class _SummaryWriter:
    """``summary.csv`` rebuilt from the folder as slides finish, as the local batch does, but at most
    every :data:`SUMMARY_EVERY_S` (or 4 times as long as a rebuild takes): a rebuild reads every
    result in the folder, and a cluster finishes many slides a minute. Always rebuilt at the end."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.stale = False
        self._last = -float("inf")
        self._cost = 0.0

    def update(self, outcomes: list[SlideOutcome]) -> None:
        self.stale = True
        if time.monotonic() - self._last >= max(SUMMARY_EVERY_S, 4 * self._cost):
            self.flush(outcomes)

    def flush(self, outcomes: list[SlideOutcome]) -> None:
        if self.stale:
            start = time.monotonic()
            write_batch_summary(self.out_dir, outcomes)
            self._last = time.monotonic()
            self._cost = self._last - start
            self.stale = False


def _outcome(future: Any, job: SlideJob) -> SlideOutcome:
    from distributed.scheduler import KilledWorker

    if future.status == "cancelled":
        raise ClusterError("lost the scheduler mid-batch; finished slides are kept, run again to resume")
    try:
        outcome: SlideOutcome = future.result()
        return outcome
    except KilledWorker:
        return SlideOutcome.failed(
            job,
            ClusterError(
                f"{job.path}: every worker that analysed it died (out of memory, or a crash reading "
                "the slide)",
                Remedy.ANALYSE_AGAIN,
            ),
        )
    except EquiTriageError:
        raise  # the output folder is unusable, or a worker does not match: no slide can succeed
    except Exception as exc:
        log.debug("%s: unexpected error on a worker", job.name, exc_info=True)
        return SlideOutcome.failed(
            job, EquiTriageError(f"{job.path}: unexpected error on a worker ({type(exc).__name__}: {exc})")
        )
