"""Nothing lost, nothing mixed up: result identity, interrupts, two writers, a full disk, bad input.

Real slides, real processes, real signals; the bad-input corpus is made from the real slides in
``../shared/data`` (truncated copies, random bytes, odd paths).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from engine import identity
from engine.batch import analyse_file, job_for
from engine.cli import main
from engine.errors import ResultLockedError
from engine.identity import LOCK_LEASE_S, ResultLock, process_life, results_name, this_host
from engine.model import Model
from engine.pipeline import AnalysisParams
from tests.conftest import REPO
from tests.engine.conftest import synthetic_pixels
from tests.engine.test_cli import read_rows, result_dir, run_cli
from tests.slide_files import write_pyramid_tiff


def engine_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def whole_results(out: Path) -> list[Path]:
    """Every finished result folder in ``out``; each must parse and hold every file it lists."""
    found = []
    for summary in out.glob("*/summary.json"):
        data = json.loads(summary.read_text())
        assert all((summary.parent / name).is_file() for name in data["outputs"]), summary
        found.append(summary.parent)
    return found


def cmu_copies(shared_data: Path, folder: Path, n: int) -> Path:
    """``folder`` holding ``n`` differently named links to the CMU-1 slide."""
    folder.mkdir()
    for i in range(n):
        (folder / f"case_{i}.svs").symlink_to(shared_data / "slides" / "CMU-1-Small-Region.svs")
    return folder


# -- result identity ---------------------------------------------------------------------------


def test_same_named_slides_never_share_a_folder(shared_data: Path, model_path: Path, tmp_path: Path) -> None:
    for sub, source in (("a", "CMU-1-Small-Region.svs"), ("b", "boxes_generic_tiled.tiff")):
        (tmp_path / sub).mkdir()
        shutil.copyfile(shared_data / "slides" / source, tmp_path / sub / "s.svs")
    out = tmp_path / "out"
    proc = run_cli(
        "analyse", str(tmp_path / "a" / "s.svs"), str(tmp_path / "b" / "s.svs"), "--out", str(out),
        "--model", str(model_path), "--default-mpp", "1.0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    folders = sorted(whole_results(out))
    assert [f.name for f in folders] == sorted(results_name(tmp_path / d / "s.svs") for d in "ab")
    stored = {json.loads((f / "summary.json").read_text())["input"]["path"] for f in folders}
    assert stored == {str((tmp_path / d / "s.svs").absolute()) for d in "ab"}
    rows = read_rows(out / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"] and len({r["score"] for r in rows}) == 2


def test_new_content_at_the_same_path_is_analysed_again(
    shared_data: Path, model_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    slide = folder / "s.tiff"
    shutil.copyfile(shared_data / "slides" / "CMU-1-Small-Region.svs", slide)
    out = tmp_path / "out"
    batch = ["batch", str(folder), "--out", str(out), "--model", str(model_path), "--default-mpp", "1.0"]

    def status() -> tuple[str, str]:
        (row,) = read_rows(out / "summary.csv")
        return row["status"], row["score"]

    assert run_cli(*batch).returncode == 0
    first = status()
    assert run_cli(*batch).returncode == 0 and status() == ("cached", first[1])
    shutil.copyfile(shared_data / "slides" / "boxes_generic_tiled.tiff", slide)  # same path, new slide
    assert run_cli(*batch).returncode == 0
    assert status()[0] == "ok" and status()[1] != first[1]
    os.utime(slide, ns=(1, 1))  # same bytes, touched: redone, never trusted blindly
    assert run_cli(*batch).returncode == 0 and status()[0] == "ok"


def test_a_multi_file_slides_companions_are_part_of_its_identity(tmp_path: Path) -> None:
    mrxs = tmp_path / "s.mrxs"
    mrxs.write_text("[GENERAL]\n")
    (tmp_path / "s").mkdir()
    data = tmp_path / "s" / "Data0000.dat"
    data.write_bytes(b"a" * 10)
    before = identity.input_identity(mrxs)
    data.write_bytes(b"b" * 11)  # new image data behind an unchanged index file
    assert identity.input_identity(mrxs) != before
    vms = tmp_path / "v.vms"
    vms.write_text("[Virtual Microscope Specimen]\nImageFile=v.jpg\nMapFile=v_map.jpg\n")
    (tmp_path / "v.jpg").write_bytes(b"x")
    assert identity.companions(vms) == [tmp_path / "v.jpg"]  # the map file is not there
    before = identity.input_identity(vms)
    os.utime(tmp_path / "v.jpg", ns=(1, 1))
    assert identity.input_identity(vms) != before
    assert identity.companions(tmp_path / "v.jpg") == []


def test_summary_csv_is_a_view_of_the_whole_folder(
    shared_data: Path, model_path: Path, tmp_path: Path
) -> None:
    folder = cmu_copies(shared_data, tmp_path / "slides", 3)
    out = tmp_path / "out"
    assert run_cli("batch", str(folder), "--out", str(out), "--model", str(model_path)).returncode == 0
    other = shared_data / "slides" / "boxes_generic_tiled.tiff"
    proc = run_cli("analyse", str(other), "--out", str(out), "--model", str(model_path), "--mpp", "1.0")
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out / "summary.csv")
    assert sorted(r["slide"] for r in rows) == ["boxes_generic_tiled", "case_0", "case_1", "case_2"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r["status"] for r in rows if r["slide"].startswith("case_")} == {"saved"}
    assert not list(out.glob(".summary.csv.tmp-*"))


# -- interrupts --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pyramid_tiff(tmp_path_factory.mktemp("large") / "large.tiff", 12000, 12000)


def test_random_interrupts_end_cleanly(large_slide: Path, model_path: Path, tmp_path: Path) -> None:
    """5 of benchmarks/interrupts.py's 100: SIGINT/SIGTERM at random moments, never a crash."""
    rng = random.Random(12)
    cmd = ["analyse", str(large_slide), "--model", str(model_path), "--stride", "40", "--threads", "1", "-q"]
    for i in range(5):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        out = tmp_path / f"o{i}"
        proc = subprocess.Popen(
            engine_cmd(*cmd, "--out", str(out)),
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.3, 2.5))
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode in (0, 128 + sig), stderr  # 0: it had finished
        assert "Traceback" not in stderr
        if proc.returncode:
            assert "interrupted; finished slides are kept" in stderr
        whole_results(out)
        assert not list(out.glob("*/.lock"))


# -- two processes on one output folder --------------------------------------------------------
def test_a_live_lock_is_respected_and_a_stale_one_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folder.mkdir()
        (folder / ".lock").write_text(f"{other.pid}\n")
        with pytest.raises(ResultLockedError, match=f"another process \\(pid {other.pid}\\)"):
            ResultLock(folder).acquire()
    finally:
        other.kill()
        other.wait()
    with ResultLock(folder):  # its process is gone: stale
        assert (folder / ".lock").read_text().split()[:2] == [str(os.getpid()), this_host()]
    assert not (folder / ".lock").exists()


@pytest.mark.skipif(process_life(os.getpid()) is None, reason="needs Linux /proc")
def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path: Path) -> None:
    """A writer crashed (or the machine rebooted) and its pid went to an unrelated process: the
    lock records the writer's life (boot id, start time), which the new process does not share."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        life = process_life(other.pid)
        assert life is not None
        (tmp_path / ".lock").write_text(f"{other.pid} {this_host()} token {life}\n")
        with pytest.raises(ResultLockedError, match=f"pid {other.pid}"):  # the writer itself: live
            ResultLock(tmp_path).acquire()
        boot, start = life.split("/")
        (tmp_path / ".lock").write_text(f"{other.pid} {this_host()} token {boot}/{int(start) - 1}\n")
        with ResultLock(tmp_path) as lock:  # the same pid, another life: the crashed writer's
            assert lock.path.read_text().split()[3] == process_life(os.getpid())
    finally:
        other.kill()
        other.wait()


def test_one_process_never_writes_one_folder_twice(tmp_path: Path) -> None:
    """The app triaging a folder while it analyses one of its slides: the same pid, two writers."""
    with ResultLock(tmp_path) as first:
        with pytest.raises(ResultLockedError, match="being analysed by this program"):
            ResultLock(tmp_path).acquire()
        assert ResultLock(tmp_path).holder() == "this program"
        assert first.path.is_file()  # the refused one took nothing away
    with ResultLock(tmp_path):  # free again once released
        pass
    assert not (tmp_path / ".lock").exists()


def test_a_lock_left_by_this_pid_is_stale(tmp_path: Path) -> None:
    """A lock file with this process's pid that no lock of this process holds (a crash of an
    earlier process that had the same pid) is taken over."""
    (tmp_path / ".lock").write_text(f"{os.getpid()} {this_host()} oldtoken\n")
    with ResultLock(tmp_path) as lock:
        assert lock.path.read_text().split()[2] != "oldtoken"


def test_releasing_never_removes_another_writers_lock(tmp_path: Path) -> None:
    lock = ResultLock(tmp_path)
    lock.acquire()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # the lock file was taken over behind our back (say, our lease expired on a stalled disk)
        (tmp_path / ".lock").write_text(f"{other.pid} {this_host()} theirs\n")
        lock.release()
        assert (tmp_path / ".lock").read_text().split()[2] == "theirs"
    finally:
        other.kill()
        other.wait()


def test_a_stale_lock_is_taken_over_only_if_it_is_still_the_stale_one(tmp_path: Path) -> None:
    """Two processes judging one stale lock at once: the second must not remove the lock the
    first has just made in its place."""
    lock_file = tmp_path / ".lock"
    lock_file.write_text(f"1 {this_host()} fresh\n")  # made after the look below
    ResultLock(tmp_path)._take_over(seen=f"999999 {this_host()} stale\n")
    assert lock_file.read_text() == f"1 {this_host()} fresh\n"  # put back
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]
    ResultLock(tmp_path)._take_over(seen=f"1 {this_host()} fresh\n")  # the one judged stale
    assert not list(tmp_path.iterdir())


def test_a_lock_from_another_machine_is_a_lease(tmp_path: Path) -> None:
    """A cluster worker on another machine: its pid cannot be checked here, its lease can."""
    folder = tmp_path / "r"
    folder.mkdir()
    lock = folder / ".lock"
    lock.write_text("1 other-machine\n")
    with pytest.raises(ResultLockedError, match=r"a process on other-machine \(pid 1\)"):
        ResultLock(folder).acquire()
    assert ResultLock(folder).held_elsewhere()
    expired = time.time() - LOCK_LEASE_S - 1
    os.utime(lock, (expired, expired))  # not renewed for a whole lease: that machine or worker died
    assert not ResultLock(folder).held_elsewhere()
    with ResultLock(folder):
        assert lock.read_text().split()[:2] == [str(os.getpid()), this_host()]


def test_a_clock_ahead_of_the_file_system_keeps_a_live_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases are judged by the clock of the file system that holds them, not this machine's."""
    (tmp_path / ".lock").write_text("1 other-machine\n")  # just written: a live lease
    ahead = time.time
    monkeypatch.setattr(identity.time, "time", lambda: ahead() + 2 * LOCK_LEASE_S)  # this machine's clock
    assert ResultLock(tmp_path).held_elsewhere()
    with pytest.raises(ResultLockedError, match="other-machine"):
        ResultLock(tmp_path).acquire()
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # no clock probe left behind


def test_a_lock_taken_over_mid_analysis_writes_nothing(model: Model, tmp_path: Path) -> None:
    """This process stalled past its lease and another took the folder over: it must not write."""
    slide = tmp_path / "s.png"
    Image.fromarray(synthetic_pixels(600, 600, (100, 100, 500, 500))).save(slide)
    job = job_for(slide)
    (tmp_path / "out").mkdir()
    lock = tmp_path / "out" / job.name / ".lock"

    def taken_over(_plan: object) -> None:
        lock.write_text("1 other-machine theirs\n")

    with pytest.raises(ResultLockedError, match="taken over by another process"):
        analyse_file(job, tmp_path / "out", model, AnalysisParams(), mpp=0.5, on_plan=taken_over)
    assert not (tmp_path / "out" / job.name / "summary.json").exists()
    assert lock.read_text() == "1 other-machine theirs\n"  # the other process's lock is left alone


def test_a_held_lock_is_renewed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "LOCK_REFRESH_S", 0.05)
    with ResultLock(tmp_path) as held:
        old = time.time() - 1000
        os.utime(held.path, (old, old))
        time.sleep(0.5)
        assert time.time() - held.path.stat().st_mtime < 5


def test_two_batches_on_one_folder_never_corrupt_each_other(
    shared_data: Path, model_path: Path, tmp_path: Path
) -> None:
    folder = cmu_copies(shared_data, tmp_path / "slides", 4)
    out = tmp_path / "out"
    cmd = engine_cmd("batch", str(folder), "--out", str(out), "--model", str(model_path), "--threads", "1")
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in "ab"
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr  # a slide left to the other batch is not a failure
        assert "Traceback" not in stderr
        # A slide the other process was writing is reported as such, in one line.
        assert all(
            "being analysed by another process" in line
            for line in stderr.splitlines()
            if "case_" in line and "pid" in line
        )
    assert len(whole_results(out)) == 4
    assert not list(out.glob("*/.lock")) and not list(out.glob("**/.*.tmp-*"))
    # the batch that finished last saw every slide finished, by itself or by the other
    assert {r["status"] for r in read_rows(out / "summary.csv")} <= {"ok", "cached", "saved"}
    # Whatever happened, a re-run finds every slide finished.
    proc = run_cli("batch", str(folder), "--out", str(out), "--model", str(model_path))
    assert proc.returncode == 0
    assert {r["status"] for r in read_rows(out / "summary.csv")} == {"cached"}


# -- a full disk -------------------------------------------------------------------------------
def test_a_full_disk_is_one_clear_error_and_no_complete_looking_result(
    shared_data: Path, model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    def small_files() -> None:  # every file this process writes is cut at 4 KiB: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run(
        engine_cmd("analyse", str(shared_data / "slides" / "CMU-1-Small-Region.svs"), "--out", str(out),
                   "--model", str(model_path)),
        cwd=REPO, capture_output=True, text=True, preexec_fn=small_files, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no space left" in errors[0] and "Traceback" not in proc.stderr
    assert not list(out.glob("*/summary.json")) and not list(out.glob("**/.*.tmp-*"))


def test_a_full_disk_keeps_the_old_result_whole(shared_data: Path, model_path: Path, tmp_path: Path) -> None:
    """``analyse`` again on a full disk: the new result cannot be written, the old one stays."""
    out = tmp_path / "out"
    cmd = engine_cmd(
        "analyse", str(shared_data / "slides" / "CMU-1-Small-Region.svs"), "--out", str(out),
        "--model", str(model_path), "--threads", "1",
    )  # fmt: skip
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120).returncode == 0
    (folder,) = whole_results(out)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, preexec_fn=small_files, timeout=120)
    assert proc.returncode == 3 and "no space left" in proc.stderr, proc.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")} == before
    assert whole_results(out) == [folder] and not list(out.glob("**/.*.tmp-*"))


# -- a slide another process is writing, odd names, an output folder around the slides ------------
def test_a_slide_another_process_writes_is_left_to_it(
    shared_data: Path, model_path: Path, tmp_path: Path
) -> None:
    folder = cmu_copies(shared_data, tmp_path / "slides", 2)
    out = tmp_path / "out"
    busy = out / results_name(folder / "case_0.svs")
    busy.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (busy / ".lock").write_text(f"{other.pid} {this_host()} theirs\n")
        proc = run_cli("batch", str(folder), "--out", str(out), "--model", str(model_path), "--threads", "1")
        assert proc.returncode == 0, proc.stderr  # batch leaves it to the other process
        assert "1 of 2 slides analysed, 1 left to another process" in proc.stdout
        rows = {r["slide"]: r["status"] for r in read_rows(out / "summary.csv")}
        assert rows == {"case_0": "busy", "case_1": "ok"}
        # analyse was asked for that very slide: not done is a failure
        proc = run_cli("analyse", str(folder / "case_0.svs"), "--out", str(out), "--model", str(model_path))
        assert proc.returncode == 1 and "being analysed by another process" in proc.stderr, proc.stderr
        assert (busy / ".lock").read_text().split()[2] == "theirs"  # its lock untouched
    finally:
        other.kill()
        other.wait()


def test_a_file_name_that_is_not_utf8(shared_data: Path, model_path: Path, tmp_path: Path) -> None:
    """Latin-1 names from an old file server: analysed, reported, and reused on a re-run."""
    folder = tmp_path / "slides"
    folder.mkdir()
    odd = Path(os.fsdecode(bytes(folder) + b"/Schnitt_\xe4.svs"))
    odd.symlink_to(shared_data / "slides" / "CMU-1-Small-Region.svs")
    out = tmp_path / "out"
    args = ("batch", str(folder), "--out", str(out), "--model", str(model_path), "--threads", "1")
    proc = run_cli(*args)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (row,) = read_rows(out / "summary.csv")  # valid UTF-8, the odd byte shown as U+FFFD
    assert row["slide"] == "Schnitt_\ufffd" and row["status"] == "ok"
    (result,) = whole_results(out)
    assert json.loads((result / "summary.json").read_text())["input"]["path"] == str(odd)
    proc = run_cli(*args)
    assert proc.returncode == 0 and read_rows(out / "summary.csv")[0]["status"] == "cached", proc.stderr


@pytest.mark.parametrize("where", ["same", "parent"])
def test_an_output_folder_around_the_slides_is_refused(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    out = folder if where == "same" else tmp_path
    proc = run_cli("batch", str(folder), "--out", str(out))
    assert proc.returncode == 2 and "choose another --out" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--mpp", "--default-mpp"])
def test_an_infinite_mpp_is_a_usage_error(shared_data: Path, tmp_path: Path, flag: str) -> None:
    command = "analyse" if flag == "--mpp" else "batch"
    target = shared_data / "slides" / ("CMU-1-Small-Region.svs" if command == "analyse" else "")
    proc = run_cli(command, str(target), "--out", str(tmp_path / "out"), flag, "inf")
    assert proc.returncode == 2 and "must be a positive number" in proc.stderr, proc.stderr


# -- the bad-input corpus ----------------------------------------------------------------------
def bad_corpus(shared_data: Path, root: Path) -> Iterator[tuple[Path, str]]:
    """(bad input, fragment of its one-line error)."""
    rng = random.Random(0)
    for source in sorted((shared_data / "slides").iterdir()):
        if source.suffix == ".dcm":
            continue
        data = source.read_bytes()
        for fraction in (0.02, 0.3, 0.7):
            bad = root / f"trunc{int(fraction * 100):02d}_{source.name}"
            bad.write_bytes(data[: int(len(data) * fraction)])
            yield bad, ""
    (root / "zero.svs").write_bytes(b"")
    yield root / "zero.svs", "not a slide"
    from engine.slide import SLIDE_SUFFIXES

    for suffix in sorted(SLIDE_SUFFIXES):
        bad = root / f"random{suffix}"
        bad.write_bytes(rng.randbytes(4096))
        yield bad, "" if suffix == ".dcm" else "not a slide"
    (root / "folder.svs").mkdir()
    yield root / "folder.svs", "is a folder"
    (root / "loop_a.svs").symlink_to(root / "loop_b.svs")
    (root / "loop_b.svs").symlink_to(root / "loop_a.svs")
    yield root / "loop_a.svs", "broken or looping link"
    for name, fragment in (
        ("broken_random_ascii.svs", "not a slide"),
        ("unopenable_bad_compression.tiff", "unsupported compression"),
        ("unreadable_bogus_jpeg.svs", "the file is damaged"),  # read first: not "too small"
    ):
        shutil.copyfile(shared_data / "broken" / name, root / name)
        yield root / name, fragment


def test_every_bad_input_gives_one_line_and_exit_1(
    shared_data: Path, model_path: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    out = tmp_path / "out"
    for bad, fragment in bad_corpus(shared_data, corpus):
        code = main(
            ["analyse", str(bad), "--out", str(out), "--model", str(model_path), "--mpp", "0.5", "-q"]
        )
        assert code in (0, 1), bad  # a truncation that spares every tile analysed is fine
        if code == 1 and fragment:
            assert fragment in read_rows(out / "summary.csv")[-1]["error"], bad


def test_a_batch_over_the_corpus_goes_on(
    shared_data: Path, model_path: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus ünïcode"
    corpus.mkdir()
    expected = dict(bad_corpus(shared_data, corpus))
    good = corpus / "good slide é.svs"
    shutil.copyfile(shared_data / "slides" / "CMU-1-Small-Region.svs", good)
    unreadable = corpus / "unreadable.svs"
    shutil.copyfile(shared_data / "slides" / "CMU-1-Small-Region.svs", unreadable)
    unreadable.chmod(0)
    out = tmp_path / "out"
    code = main(
        ["batch", str(corpus), "--out", str(out), "--model", str(model_path), "--default-mpp", "0.5", "-q"]
    )
    err = capfd.readouterr().err
    assert code == 1 and "Traceback" not in err
    rows = {r["path"]: r for r in read_rows(out / "summary.csv")}
    assert rows[str(good.absolute())]["status"] == "ok"  # after every broken file before it
    if os.geteuid() == 0:  # root reads a chmod 000 file anyway: it is analysed like any other
        assert rows[str(unreadable.absolute())]["status"] == "ok"
    else:
        assert "Permission denied" in rows[str(unreadable)]["error"]
    failed = [r for r in rows.values() if r["status"] == "failed"]
    for path, fragment in expected.items():
        row = rows.get(str(path))
        assert row is not None, path
        if fragment:
            assert row["status"] == "failed" and fragment in row["error"], row
    # Quiet: one warning line per failed slide, then the closing count; nothing else.
    lines = err.strip().splitlines()
    assert len(lines) == len(failed) + 1 and lines[-1].endswith(f"slides analysed; results in {out}")
    for row in failed:
        problem = row["error"].split("; ")[0]  # the remedy is worded for the command line there
        assert sum(problem in line for line in lines) == 1, problem
    assert result_dir(out, "good slide é").is_dir()


# -- exit codes --------------------------------------------------------------------------------
def test_exit_codes_for_nothing_to_analyse(model_path: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file.txt").write_text("x")
    for folder, fragment, out in (
        (empty, "no slides found", tmp_path / "o"),
        (tmp_path / "missing", "no such folder", tmp_path / "o"),
        (tmp_path / "file.txt", "not a folder", tmp_path / "o"),
        (tmp_path / "missing", "no such folder", tmp_path),  # not "--out holds the slide folder"
        (tmp_path / "file.txt", "not a folder", tmp_path),
    ):
        proc = run_cli("batch", str(folder), "--out", str(out), "--model", str(model_path))
        assert proc.returncode == 4, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and fragment in errors[0]


def test_the_public_api_is_exported() -> None:
    code = (
        "import sys, engine\n"
        "assert 'engine.model' not in sys.modules  # importing engine stays light\n"
        "from engine import Model, SlideSummary, analyse_slide, open_slide, results_name, run_batch\n"
        "print(Model.__module__, analyse_slide.__module__, open_slide.__module__, run_batch.__module__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["engine.model", "engine.pipeline", "engine.slide", "engine.batch"]


def test_a_broken_openslide_handle_fails_its_slide_only(
    shared_data: Path, model: Model, tmp_path: Path
) -> None:
    from engine.batch import job_for, run_batch
    from engine.errors import SlideReadError
    from engine.pipeline import AnalysisParams
    from engine.slide import open_slide

    bogus = shared_data / "broken" / "unreadable_bogus_jpeg.svs"
    with open_slide(bogus) as slide:
        for _ in range(2):  # the second read fails at once, with the first error, not a crash
            with pytest.raises(SlideReadError, match="Bogus marker length"):
                slide.read_region((0, 0), 0, (8, 8))
    with pytest.raises(SlideReadError, match="closed"):
        slide.read_region((0, 0), 0, (8, 8))
    good = shared_data / "slides" / "CMU-1-Small-Region.svs"
    outcomes = run_batch([job_for(bogus), job_for(good)], tmp_path, model, AnalysisParams(), default_mpp=0.5)
    assert [o.status for o in outcomes] == ["failed", "ok"]
    assert "the file is damaged" in outcomes[0].error


def test_an_output_folder_removed_mid_run_is_one_clear_error(
    shared_data: Path, model: Model, tmp_path: Path
) -> None:
    from engine.batch import job_for, run_batch
    from engine.errors import OutputError
    from engine.pipeline import AnalysisParams

    out = tmp_path / "out"
    out.mkdir()

    def remove_output(done: int, total: int) -> None:
        if done and out.exists():
            shutil.rmtree(out)

    job = job_for(shared_data / "slides" / "CMU-1-Small-Region.svs")
    with pytest.raises(OutputError, match="the output folder was removed"):
        run_batch([job, job], out, model, AnalysisParams(), progress=remove_output)
    assert not out.exists()  # nothing recreated, nothing that looks complete
