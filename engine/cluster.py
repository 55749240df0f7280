"""Analyse a slide archive on a Dask cluster: a local one on this machine, or one on several.

This is the client's side: getting a cluster (:func:`local_cluster`, :func:`remote_cluster`) and
running a batch on it (:func:`run_cluster_batch`). Workers get paths (slides, model and output
folder on a filesystem every worker sees, at the same path), never open handles, and run
:mod:`engine.cluster_worker`, whose :func:`~engine.cluster_worker.analyse_on_worker` is the local
batch's :func:`engine.batch.analyse_job`, so each slide's outputs, locks and atomic writes are
the same. The client rebuilds ``summary.csv`` from the folder as slides finish (at most every
:data:`SUMMARY_EVERY_S`, since a rebuild reads every result) and always at the end.

- A worker killed mid-slide costs that slide's work only: the scheduler gives the slide to another
  worker, and after :data:`MAX_WORKER_DEATHS` deaths it is reported as failed. Results are written
  atomically with ``summary.json`` last, so a dead worker leaves nothing that looks complete.
- Every worker proves it runs this engine version and this model (sha256), and sees the output
  folder, before any slide (:func:`~engine.cluster_worker.check_worker`), and again for each
  slide (workers may join late).
- A Dask scheduler runs whatever code its clients send: the local cluster listens on the loopback
  interface only, and a plain-TCP scheduler elsewhere is refused unless explicitly allowed
  (:func:`check_address`); use ``tls://`` with certificates (:func:`tls_security`).

Dask is an optional extra (``pip install -e '.[cluster]'``): it is imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from engine.batch import SlideJob, SlideOutcome, rebuild_batch_summary, write_batch_summary
from engine.cluster_worker import ClusterRequest, analyse_on_worker, check_worker, usable_cores
from engine.errors import CancelledError, ClusterError, EquiTriageError, Remedy

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_WORKER_DEATHS = 2  # the scheduler's allowed-failures: a slide is tried at most 3 times
TASK_RETRIES = 1  # an unexpected exception (a bug, not an EquiTriageError) is retried once
POLL_S = 0.05
SUMMARY_EVERY_S = 5.0  # summary.csv is rebuilt at most this often while a cluster batch runs
WORKER_WAIT_S = 60.0
# For a local cluster (a remote scheduler has its own configuration: see the README).
LOCAL_CONFIG: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": MAX_WORKER_DEATHS,
    "distributed.scheduler.worker-saturation": 1.0,  # a worker holds only the slides it is analysing
    "distributed.worker.preload": ["engine.cluster_worker"],  # its dask_setup, in every worker process
}


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


def check_workers(
    client: Any,
    request: ClusterRequest,
    wait_s: float = WORKER_WAIT_S,
    cancel: threading.Event | None = None,
) -> int:
    """Wait for a worker (a second at a time, so that a cancel stops the wait), then prove each
    worker fit (:func:`check_worker`); return how many."""
    deadline = time.monotonic() + wait_s
    while True:
        if cancel is not None and cancel.is_set():
            raise CancelledError("batch cancelled while waiting for a worker")
        try:
            client.wait_for_workers(1, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            break
        except TimeoutError:
            if time.monotonic() >= deadline:
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
        check_workers(client, request, cancel=cancel)
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
            try:
                client.cancel(list(pending))
            except Exception:  # best effort: the scheduler may be gone; the error above is reported
                log.debug("could not cancel %d pending slides", len(pending), exc_info=True)
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
        """A rebuild that fails here is a warning (:func:`rebuild_batch_summary`)."""
        self.stale = True
        if time.monotonic() - self._last >= max(SUMMARY_EVERY_S, 4 * self._cost):
            start = time.monotonic()
            self.stale = not rebuild_batch_summary(self.out_dir, outcomes)
            self._took(start)

    def flush(self, outcomes: list[SlideOutcome]) -> None:
        """The last rebuild: raises OutputError if it fails."""
        if self.stale:
            start = time.monotonic()
            write_batch_summary(self.out_dir, outcomes)
            self.stale = False
            self._took(start)

    def _took(self, start: float) -> None:
        self._last = time.monotonic()
        self._cost = self._last - start


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
