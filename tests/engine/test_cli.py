"""The command line, driven as a user drives it: real slides, real processes, exit codes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from engine.cli import main
from tests.conftest import REPO
from tests.onnx_models import write_model


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def result_dir(out: Path, label: str) -> Path:
    """The one result folder of the slide called ``label`` (``<label>_<path hash>``)."""
    found = [p for p in out.iterdir() if p.is_dir() and p.name.rsplit("_", 1)[0] == label]
    assert len(found) == 1, found
    return found[0]


def test_analyse_a_real_slide(shared_data: Path, model_path: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "analyse",
        str(shared_data / "slides" / "CMU-1-Small-Region.svs"),
        "--out",
        str(tmp_path),
        "--model",
        str(model_path),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((result_dir(tmp_path, "CMU-1-Small-Region") / "summary.json").read_text())
    assert summary["slide"]["vendor"] == "aperio"
    assert summary["slide"]["mpp_used"] == pytest.approx(0.499)
    assert summary["tiles"]["analysed"] > 50
    assert "CMU-1-Small-Region" in proc.stdout


@pytest.mark.parametrize(
    ("slide", "extra", "fragment"),
    [
        ("missing.svs", [], "no such file"),
        ("", [], "is a folder"),
        ("broken/broken_random_ascii.svs", [], "not a slide"),
        ("broken/unopenable_bad_compression.tiff", [], "unsupported compression"),
        ("broken/unreadable_bogus_jpeg.svs", ["--mpp", "0.5"], "damaged"),
        ("slides/CMU-1-Small-Region.svs", ["--mpp", "20"], "too coarse for the model"),
        ("slides/tcga-cr-7395-01a-01-ts1.svs", [], "pass --mpp"),
        ("slides/small_16x16.svs", [], "smaller than one model patch"),
    ],
)
def test_bad_slides_fail_with_one_clear_line(
    shared_data: Path, model_path: Path, tmp_path: Path, slide: str, extra: list[str], fragment: str
) -> None:
    path = shared_data / slide if slide != "missing.svs" else tmp_path / slide
    proc = run_cli("analyse", str(path), "--out", str(tmp_path / "out"), "--model", str(model_path), *extra)
    assert proc.returncode == 1
    assert fragment in proc.stdout  # the result table row
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr
    assert not list((tmp_path / "out").glob("*/summary.json"))
    assert not [p for p in (tmp_path / "out").glob("*") if p.is_dir()]  # no empty result folder


@pytest.mark.parametrize(
    ("model_arg", "fragment"),
    [
        ("missing.onnx", "no model file"),
        ("corrupt.onnx", "not a valid ONNX model"),
        ("plain.onnx", "no EquiTriage contract"),
    ],
)
def test_bad_models_stop_before_any_slide(
    shared_data: Path, tmp_path: Path, model_arg: str, fragment: str
) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"junk" * 50)
    write_model(tmp_path / "plain.onnx", metadata="")
    proc = run_cli(
        "analyse",
        str(shared_data / "slides" / "CMU-1-Small-Region.svs"),
        "--out",
        str(tmp_path / "o"),
        "--model",
        str(tmp_path / model_arg),
    )
    assert proc.returncode == 3
    assert_one_line_error(proc, fragment)


def test_no_shipped_model_says_to_pass_one(shared_data: Path, tmp_path: Path) -> None:
    proc = run_cli("model", env={"EQUITRIAGE_MODEL": str(tmp_path / "none.onnx")})
    assert proc.returncode == 3
    assert_one_line_error(proc, "no model file there; check the --model path")


def test_no_model_anywhere_names_the_model_flag() -> None:
    code = (
        "import engine.model\n"
        "engine.model.assets_dirs = lambda: []\n"
        "from engine.cli import main\n"
        "raise SystemExit(main(['model']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EQUITRIAGE_MODEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 3
    assert_one_line_error(proc, "no model is shipped with this installation; pass --model PATH")


def test_unwritable_output_folder(shared_data: Path, model_path: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli(
        "analyse",
        str(shared_data / "slides" / "CMU-1-Small-Region.svs"),
        "--out",
        str(blocker / "out"),
        "--model",
        str(model_path),
    )
    assert proc.returncode == 3
    assert_one_line_error(proc, "choose an output folder you can write to (--out)")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("analyse", "x.svs").returncode == 2
    assert run_cli("analyse", "x.svs", "--out", str(tmp_path), "--mpp", "-1").returncode == 2
    assert run_cli("batch", str(tmp_path), "--out", str(tmp_path), "--default-mpp", "0").returncode == 2
    both = run_cli("analyse", "x.svs", "--out", str(tmp_path), "--mpp", "0.5", "--default-mpp", "0.5")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert run_cli("frobnicate").returncode == 2


def test_info_and_model(shared_data: Path, model_path: Path) -> None:
    proc = run_cli("info", str(shared_data / "slides" / "CMU-1-Small-Region.svs"), "--json")
    facts = json.loads(proc.stdout)
    assert facts["dimensions"] == [2220, 2967] and facts["properties"]["openslide.vendor"] == "aperio"
    proc = run_cli("info", str(shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"))
    assert proc.returncode == 0 and "pass --mpp" in proc.stdout
    proc = run_cli("model", "--model", str(model_path), "--json")
    assert json.loads(proc.stdout)["model_version"] == "test-colour-1"


def test_a_damaged_model_card_is_noted_not_fatal(model_path: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(model_path, model)
    (tmp_path / "MODEL_CARD.md").write_bytes(b"\xff\xfe not UTF-8")
    proc = run_cli("model", "--model", str(model))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "sha256" in proc.stdout and "MODEL_CARD.md: cannot be read" in proc.stderr


def test_a_closed_pipe_ends_quietly(model_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "model", "--model", str(model_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # as `| head` does when it has read enough, here before the first line
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and stderr == "", stderr


def test_a_signal_while_the_command_line_is_imported_ends_cleanly() -> None:
    # SIGTERM comes while `engine.cli` is being imported, after `engine.launch` (the installed
    # command's entry point) set its handlers: kept, then handled as any interrupt (exit 143).
    code = """
import importlib.abc, os, signal, sys

class SignalOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "engine.cli":
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["equitriage-engine", "model", "--json"]
from engine.launch import main
sys.exit(main())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in proc.stderr, proc.stderr
    assert "interrupted" in proc.stderr
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["equitriage-engine"] == "engine.launch:main"


def slide_folder(shared_data: Path, root: Path, copies: int) -> Path:
    folder = root / "slides"
    folder.mkdir()
    for i in range(copies):
        (folder / f"case_{i:02d}.svs").symlink_to(shared_data / "slides" / "CMU-1-Small-Region.svs")
    (folder / "broken.svs").symlink_to(shared_data / "broken" / "broken_random_ascii.svs")
    (folder / "notes.txt").write_text("not a slide")
    sub = folder / "dicom"
    sub.mkdir()
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        (sub / name).symlink_to(shared_data / "slides" / name)
    return folder


def test_batch_reports_broken_slides_and_goes_on(shared_data: Path, model_path: Path, tmp_path: Path) -> None:
    folder = slide_folder(shared_data, tmp_path, copies=2)
    out = tmp_path / "out"
    proc = run_cli("batch", str(folder), "--out", str(out), "--model", str(model_path), "--recursive")
    assert proc.returncode == 1
    rows = read_rows(out / "summary.csv")
    by_name = {r["slide"]: r for r in rows}
    assert set(by_name) == {"case_00", "case_01", "broken", "dicom"}
    assert by_name["case_00"]["status"] == "ok" and by_name["broken"]["status"] == "failed"
    assert "not a slide" in by_name["broken"]["error"]
    assert "smaller than one model patch" in by_name["dicom"]["error"]  # 16 x 16 px, one DICOM slide
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["slide"].startswith("case_") and rows[0]["score"]
    # Re-running skips finished slides.
    again = run_cli("batch", str(folder), "--out", str(out), "--model", str(model_path), "--recursive")
    statuses = {r["slide"]: r["status"] for r in read_rows(out / "summary.csv")}
    assert statuses["case_00"] == statuses["case_01"] == "cached"
    assert again.returncode == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_batch_killed_half_way_resumes(
    shared_data: Path, model_path: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    folder = slide_folder(shared_data, tmp_path, copies=6)
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "engine",
        "batch",
        str(folder),
        "--out",
        str(out),
        "--model",
        str(model_path),
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("*/summary.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "re-run the same command" in stderr and "Traceback" not in stderr
    finished = {p.parent.name for p in out.glob("*/summary.json")}
    assert 1 <= len(finished) < 6
    # Whatever was interrupted left only hidden temp files or whole files, never a summary.
    for summary in out.glob("*/summary.json"):
        json.loads(summary.read_text())
    done = run_cli("batch", str(folder), "--out", str(out), "--model", str(model_path))
    rows = {r["folder"]: r["status"] for r in read_rows(out / "summary.csv")}
    assert {n for n, s in rows.items() if s == "cached"} == finished
    labels = {r["slide"]: r["status"] for r in read_rows(out / "summary.csv")}
    assert all(labels[f"case_{i:02d}"] in ("ok", "cached") for i in range(6))
    assert done.returncode == 1  # the broken slide


def _mpp_of(out: Path, name: str) -> tuple[float, str, float | None]:
    slide = json.loads((result_dir(out, name) / "summary.json").read_text())["slide"]
    return slide["mpp_used"], slide["mpp_origin"], slide["file_mpp"]


def test_default_mpp_fills_in_only_where_the_file_has_none(
    shared_data: Path, model_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "own.svs").symlink_to(shared_data / "slides" / "CMU-1-Small-Region.svs")  # 0.499 µm/px
    (folder / "bare.tiff").symlink_to(shared_data / "slides" / "boxes_generic_tiled.tiff")  # none
    out = tmp_path / "out"
    batch = ["batch", str(folder), "--out", str(out), "--model", str(model_path)]

    def statuses() -> dict[str, str]:
        return {r["slide"]: r["status"] for r in read_rows(out / "summary.csv")}

    proc = run_cli(*batch)
    assert proc.returncode == 1 and statuses() == {"own": "ok", "bare": "failed"}
    warning = next(line for line in proc.stderr.splitlines() if "bare" in line)
    assert "does not record its µm/px; pass --default-mpp" in warning
    assert "--default-mpp" in proc.stdout  # the result table row

    proc = run_cli(*batch, "--default-mpp", "1.0")
    assert proc.returncode == 0, proc.stderr
    assert statuses() == {"own": "cached", "bare": "ok"}  # the file's own µm/px was used: no re-run
    used, origin, file_mpp = _mpp_of(out, "own")
    assert used == pytest.approx(0.499) and origin == "file" and file_mpp == pytest.approx(0.499)
    assert _mpp_of(out, "bare") == (1.0, "default", None)

    proc = run_cli(*batch, "--default-mpp", "1.2")
    assert statuses() == {"own": "cached", "bare": "ok"}  # only the slide that used the default
    assert _mpp_of(out, "bare") == (1.2, "default", None)
    run_cli(*batch, "--default-mpp", "1.2")
    assert statuses() == {"own": "cached", "bare": "cached"}

    proc = run_cli(*batch, "--mpp", "1.1")  # --mpp still overrides every slide
    assert proc.returncode == 0, proc.stderr
    assert statuses() == {"own": "ok", "bare": "ok"}
    used, origin, file_mpp = _mpp_of(out, "own")
    assert used == 1.1 and origin == "override" and file_mpp == pytest.approx(0.499)
    assert _mpp_of(out, "bare") == (1.1, "override", None)

    proc = run_cli(
        "analyse",
        str(folder / "bare.tiff"),
        "--out",
        str(tmp_path / "one"),
        "--model",
        str(model_path),
        "--default-mpp",
        "0.9",
    )
    assert proc.returncode == 0, proc.stderr
    assert _mpp_of(tmp_path / "one", "bare") == (0.9, "default", None)


def test_engine_never_opens_a_network_connection(
    shared_data: Path, model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    code = main(
        [
            "analyse",
            str(shared_data / "slides" / "CMU-1-Small-Region.svs"),
            "--out",
            str(tmp_path),
            "--model",
            str(model_path),
            "-q",
        ]
    )
    assert code == 0
    assert attempts == []


def test_all_glass_image_is_a_valid_no_tissue_result(model_path: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    glass = tmp_path / "glass.png"
    rng = np.random.default_rng(0)
    Image.fromarray((236 + rng.integers(0, 6, (600, 800, 3))).astype(np.uint8)).save(glass)
    proc = run_cli(
        "analyse", str(glass), "--out", str(tmp_path / "o"), "--model", str(model_path), "--mpp", "0.5"
    )
    assert proc.returncode == 0, proc.stderr
    glass_dir = result_dir(tmp_path / "o", "glass")
    summary = json.loads((glass_dir / "summary.json").read_text())
    assert summary["score"] is None and summary["category"] == "no tissue"
    assert summary["tiles"]["analysed"] == 0 and summary["regions"] == 0
    assert read_rows(glass_dir / "tiles.csv") == []
    assert json.loads((glass_dir / "regions.geojson").read_text())["features"] == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_onnxruntime_records_nothing_in_the_home_folder(model_path: Path, tmp_path: Path) -> None:
    """onnxruntime >= 1.29 keeps a device id and an event cache under ~/.cache/Microsoft unless
    told not to before it starts (engine/__init__.py)."""
    home = tmp_path / "home"
    home.mkdir()
    proc = run_cli(
        "model", "--model", str(model_path), "--json", env={"HOME": str(home), "XDG_CACHE_HOME": ""}
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(home.rglob("*"))


def test_no_network_syscalls_at_all(shared_data: Path, model_path: Path, tmp_path: Path) -> None:
    """Below Python too (onnxruntime and OpenSlide are C++): no IP socket is ever created."""
    trace = tmp_path / "strace.txt"
    proc = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=socket,connect",
            "-o",
            str(trace),
            sys.executable,
            "-m",
            "engine",
            "analyse",
            str(shared_data / "slides" / "CMU-1-Small-Region.svs"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(model_path),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    calls = trace.read_text().splitlines()
    assert not [c for c in calls if "AF_INET" in c or "AF_NETLINK" in c], calls
