"""A batch on a real local Dask cluster (2 worker processes on loopback): the local batch's results,
the same ranking, broken slides reported, and a worker killed mid-slide costs only that slide."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

from engine.batch import SlideJob, discover_slides, run_batch  # noqa: E402
from engine.cluster import check_address, local_cluster, run_cluster_batch, threads_per_host  # noqa: E402
from engine.cluster_worker import ClusterRequest, usable_cores  # noqa: E402
from engine.errors import ClusterError, Remedy, WorkerMismatchError  # noqa: E402
from engine.identity import LOCK, LOCK_LEASE_S  # noqa: E402
from engine.model import Model  # noqa: E402
from engine.pipeline import AnalysisParams  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.slide_files import write_pyramid_tiff  # noqa: E402

PARAMS = AnalysisParams(stride_px=48, read_threads=1)  # about a second a slide here
GOOD = ("CMU-1-Small-Region", "s0", "s1", "s2", "s3")
# A finished slide's outcome waits on its worker until the client collects it: if that worker is
# killed first, the slide is run again and finds its result on disk ("cached"), nothing is redone.
DONE = ("ok", "cached")


@pytest.fixture(scope="module")
def slides(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real slides (four 6,000 px pyramids and CMU-1-Small-Region) and three broken files."""
    folder = tmp_path_factory.mktemp("slides")
    for seed in range(4):
        write_pyramid_tiff(folder / f"s{seed}.tiff", 6000, 6000, seed=seed)
    shutil.copy(shared_data / "slides" / "CMU-1-Small-Region.svs", folder)
    for broken in sorted((shared_data / "broken").iterdir()):
        shutil.copy(broken, folder)
    return folder


@pytest.fixture(scope="module")
def jobs(slides: Path) -> list[SlideJob]:
    return discover_slides(slides)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(2) as client:
        yield client


@pytest.fixture(scope="module")
def local_out(jobs: list[SlideJob], model: Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same slides through the local batch."""
    out = tmp_path_factory.mktemp("local")
    run_batch(jobs, out, model, PARAMS)
    return out


def request_for(model: Model, out: Path, **kwargs: Any) -> ClusterRequest:
    out.mkdir(parents=True, exist_ok=True)
    return ClusterRequest.for_model(model, out, PARAMS, threads=1, **kwargs)


def summary_rows(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open() as fh:
        return list(csv.DictReader(fh))


def ranking(out: Path) -> list[tuple[str, ...]]:
    keys = ("rank", "slide", "score", "category", "tiles_analysed", "error", "folder")
    return [tuple(row[k] for k in keys) for row in summary_rows(out)]


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.name == LOCK or ".tmp-" in p.name]


def assert_same_results(out: Path, reference: Path) -> None:
    assert ranking(out) == ranking(reference)
    for row in summary_rows(reference):
        if row["status"] != "failed":
            name = row["folder"]
            assert (out / name / "tiles.csv").read_text() == (reference / name / "tiles.csv").read_text()
    assert leftovers(out) == []


def test_the_local_cluster_listens_on_loopback_only(cluster: Any) -> None:
    worker_pids = set(cluster.run(os.getpid).values())
    me = psutil.Process()
    processes = [me, *me.children(recursive=True)]
    assert worker_pids <= {p.pid for p in processes}
    listening = [
        c.laddr.ip
        for p in processes
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert len(listening) >= 3  # the scheduler and two workers at least
    assert set(listening) == {"127.0.0.1"}


def test_slides_at_once_share_the_cores_of_their_machine(cluster: Any) -> None:
    assert threads_per_host(cluster) == (("127.0.0.1", max(1, usable_cores() // 2)),)


def test_cluster_batch_gives_the_local_batch_results(
    cluster: Any, jobs: list[SlideJob], model: Model, local_out: Path, tmp_path: Path
) -> None:
    outcomes = run_cluster_batch(cluster, jobs, request_for(model, tmp_path))
    by_label = {o.job.label: o for o in outcomes}
    assert {label for label, o in by_label.items() if o.status == "ok"} == set(GOOD)
    assert by_label["broken_random_ascii"].status == "failed"
    assert_same_results(tmp_path, local_out)
    # Resumed: every finished slide is reused, on the workers, by the same rules.
    again = run_cluster_batch(cluster, jobs, request_for(model, tmp_path))
    assert sorted(o.job.label for o in again if o.status == "cached") == sorted(GOOD)
    assert_same_results(tmp_path, local_out)


class Killer(threading.Thread):
    """Kills (SIGKILL) the worker process that holds the lock of a slide, mid-analysis."""

    def __init__(self, out: Path, prefix: str, times: int) -> None:
        super().__init__(daemon=True)
        self.out, self.prefix, self.times = out, prefix, times
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.times and not self.stop.is_set():
            for lock in self.out.glob(f"{self.prefix}*/{LOCK}"):
                try:
                    pid = int(lock.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
                if pid not in self.killed and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
            time.sleep(0.01)


def test_a_killed_worker_costs_only_the_slide_it_held(
    cluster: Any, jobs: list[SlideJob], model: Model, local_out: Path, tmp_path: Path
) -> None:
    killer = Killer(tmp_path, "s1_", times=1)
    killer.start()
    outcomes = run_cluster_batch(cluster, jobs, request_for(model, tmp_path))
    killer.stop.set()
    killer.join()
    assert len(killer.killed) == 1
    assert sorted(o.job.label for o in outcomes if o.status in DONE) == sorted(GOOD)
    assert_same_results(tmp_path, local_out)


def test_a_slide_that_keeps_killing_workers_is_reported_failed(
    cluster: Any, jobs: list[SlideJob], model: Model, tmp_path: Path
) -> None:
    killer = Killer(tmp_path, "s2_", times=3)  # allowed-failures is 2: the third death ends it
    killer.start()
    outcomes = run_cluster_batch(cluster, jobs, request_for(model, tmp_path))
    killer.stop.set()
    killer.join()
    assert len(killer.killed) == 3
    by_label = {o.job.label: o for o in outcomes}
    assert by_label["s2"].status == "failed" and "died" in by_label["s2"].error
    assert by_label["s2"].remedy is Remedy.ANALYSE_AGAIN
    assert {label for label, o in by_label.items() if o.status in DONE} == set(GOOD) - {"s2"}
    s2_folder = tmp_path / by_label["s2"].job.name
    assert not (s2_folder / "summary.json").exists()  # nothing half-written looks complete
    rows = {row["slide"]: row for row in summary_rows(tmp_path)}
    assert rows["s2"]["status"] == "failed" and rows["s2"]["score"] == ""


def test_a_slide_locked_by_a_dead_worker_on_another_machine_is_taken_over_when_its_lease_ends(
    cluster: Any, jobs: list[SlideJob], model: Model, local_out: Path, tmp_path: Path
) -> None:
    job = next(j for j in jobs if j.label == "s0")
    lock = tmp_path / job.name / LOCK
    lock.parent.mkdir(parents=True)
    lock.write_text("4242 another-machine\n")  # its worker died there; its lease ends in 2 s
    renewed = time.time() - LOCK_LEASE_S + 2
    os.utime(lock, (renewed, renewed))
    start = time.monotonic()
    [outcome] = run_cluster_batch(cluster, [job], request_for(model, tmp_path))
    assert outcome.status == "ok" and time.monotonic() - start > 1.5
    reference = local_out / job.name / "tiles.csv"
    assert (tmp_path / job.name / "tiles.csv").read_text() == reference.read_text()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model_sha256": "0" * 64}, "is not the client's"),
        ({"engine_version": "0.0.0"}, "runs EquiTriage 0.1.0, this client 0.0.0"),
    ],
)
def test_a_worker_with_another_model_or_engine_stops_the_batch_in_one_line(
    cluster: Any,
    jobs: list[SlideJob],
    model: Model,
    tmp_path: Path,
    change: dict[str, str],
    fragment: str,
) -> None:
    request = dataclasses.replace(request_for(model, tmp_path), **change)
    with pytest.raises(WorkerMismatchError) as info:
        run_cluster_batch(cluster, jobs, request)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert info.value.remedy is Remedy.MATCH_WORKERS
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []  # no slide was started


@pytest.mark.parametrize(
    ("address", "insecure", "expected"),
    [
        ("tls://10.0.0.5:8786", False, "tls://10.0.0.5:8786"),
        ("tcp://127.0.0.1:8786", False, "tcp://127.0.0.1:8786"),
        ("localhost:8786", False, "tcp://localhost:8786"),
        ("tcp://[::1]:8786", False, "tcp://[::1]:8786"),
        ("tcp://10.0.0.5:8786", True, "tcp://10.0.0.5:8786"),
        ("tcp://10.0.0.5:8786", False, None),
        ("tcp://lab-server:8786", False, None),
        ("10.0.0.5:8786", False, None),
    ],
)
def test_plain_tcp_off_this_machine_needs_insecure(
    address: str, insecure: bool, expected: str | None
) -> None:
    if expected is None:
        with pytest.raises(ClusterError) as info:
            check_address(address, insecure)
        assert info.value.remedy is Remedy.SECURE_SCHEDULER
    else:
        assert check_address(address, insecure) == expected


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_the_command_line_on_two_workers(
    slides: Path, model_path: Path, local_out: Path, tmp_path: Path
) -> None:
    common = ["--out", str(tmp_path), "--model", str(model_path), "--stride", "48", "--read-threads", "1"]
    proc = run_cli("batch", str(slides), *common, "--workers", "2")
    assert proc.returncode == 1, proc.stderr  # the broken files failed, the others were analysed
    assert "Traceback" not in proc.stderr and "Scheduler at" not in proc.stderr
    assert_same_results(tmp_path, local_out)
    proc = run_cli("batch", str(slides), *common, "--scheduler", "tcp://192.0.2.1:8786")
    assert proc.returncode == 3
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "pass --insecure" in errors[0], proc.stderr


def test_ctrl_c_stops_the_cluster_batch_cleanly(slides: Path, model_path: Path, tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: client and workers alike."""
    many = tmp_path / "many"
    many.mkdir()
    for i in range(12):
        shutil.copy(slides / "s0.tiff", many / f"s{i:02d}.tiff")
    out = tmp_path / "out"
    args = ["batch", str(many), "--out", str(out), "--model", str(model_path), "--stride", "48"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args, "--workers", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("*/summary.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "interrupted" in errors[0], stderr
    finished = list(out.glob("*/summary.json"))
    assert 0 < len(finished) < 12
    for summary in finished:  # whatever looks complete is complete
        assert {p.name for p in summary.parent.iterdir()} >= {"tiles.csv", "heatmap.png", "regions.geojson"}


def scheduler_address(scheduler_file: Path, within_s: float = 60.0) -> str:
    """The address a `dask scheduler` started with ``--scheduler-file`` writes there."""
    deadline = time.monotonic() + within_s
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return str(json.loads(scheduler_file.read_text())["address"])


def test_ctrl_c_while_waiting_for_a_worker_ends_at_once(model_path: Path, tmp_path: Path) -> None:
    """A scheduler no worker has joined: the wait (up to a minute) stops at the Ctrl-C, and the
    exit is 130 (was: the full wait, then "no worker joined" and exit 3)."""
    where = tmp_path / "scheduler.json"
    loopback = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(where)]
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", *loopback],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = scheduler_address(where)
        (slides := tmp_path / "slides").mkdir()
        write_pyramid_tiff(slides / "a.tiff", 1000, 1000)
        args = ["batch", str(slides), "--out", str(tmp_path / "out"), "--model", str(model_path)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", *args, "--scheduler", address],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:  # connected: now it waits for a worker
            if "analysing on a Dask cluster" in line:
                break
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=45)  # well before the minute's wait would end
        assert proc.returncode == 130, rest
        assert "interrupted" in rest and "no worker joined" not in rest and "Traceback" not in rest
    finally:
        if "proc" in locals() and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        scheduler.terminate()
        scheduler.wait(timeout=20)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_tls_cluster_started_as_the_readme_says(
    slides: Path, model_path: Path, local_out: Path, tmp_path: Path
) -> None:
    """scripts/make_cluster_certs.sh, `dask scheduler` and `dask worker` with TLS, on loopback."""
    certs = tmp_path / "certs"
    subprocess.run(["bash", str(REPO / "scripts" / "make_cluster_certs.sh"), str(certs)], check=True)

    def tls(name: str) -> list[str]:
        pem = [str(certs / "ca.pem"), str(certs / f"{name}.pem"), str(certs / f"{name}-key.pem")]
        return ["--tls-ca-file", pem[0], "--tls-cert", pem[1], "--tls-key", pem[2]]

    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2"}
    where = tmp_path / "scheduler.json"
    loopback = ["--host", "127.0.0.1", "--no-dashboard"]
    scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--port", "0"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
    started = [
        subprocess.Popen(
            [*scheduler, *loopback, "--scheduler-file", str(where), *tls("scheduler")],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        address = scheduler_address(where)  # what `dask worker` would be given
        assert address.startswith("tls://127.0.0.1:")
        started.append(
            subprocess.Popen(
                [*worker, address, "--nworkers", "2", "--nthreads", "1", *loopback, *tls("worker")],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        out = tmp_path / "out"
        common = [str(slides), "--out", str(out), "--model", str(model_path), "--threads", "1"]
        common += ["--stride", "48", "--read-threads", "1", "--scheduler", address]
        proc = run_cli("batch", *common, *tls("client"))
        assert proc.returncode == 1, proc.stderr
        assert_same_results(out, local_out)
        proc = run_cli("batch", *common)  # no certificate: refused before connecting
        assert proc.returncode == 3 and "needs certificates" in proc.stderr, proc.stderr
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_the_engine_imports_no_dask_until_a_cluster_is_asked_for() -> None:
    code = (
        "import sys, engine, engine.cli, engine.batch, engine.cluster, engine.cluster_worker\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "[]"
