"""The double-click bundle, built as users receive it and run with no Python around it.

Builds ``pyinstaller.spec`` from a fresh runtime-only virtual environment (no torch, e2cnn,
scipy or onnx tools installed), then runs the bundled programs under ``env -i``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.bundle

HEAVY = (
    *("torch", "e2cnn", "scipy", "onnx", "onnxscript", "sympy", "matplotlib", "tkinter"),
    *("dask", "distributed"),
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/EquiTriage built from a runtime-only venv (or EQUITRIAGE_BUNDLE, if set, already built)."""
    prebuilt = os.environ.get("EQUITRIAGE_BUNDLE")
    if prebuilt:
        return Path(prebuilt)
    if not (REPO / "assets" / "model.onnx").is_file():
        pytest.fail("assets/model.onnx is missing: the bundle ships the trained model")
    root = tmp_path_factory.mktemp("bundle")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"{REPO}[gui,bundle]"], check=True, cwd=root)
    listed = subprocess.run([str(py), "-m", "pip", "list"], check=True, capture_output=True, text=True)
    installed = {line.split()[0].lower() for line in listed.stdout.splitlines()[2:] if line.strip()}
    assert not installed & {"torch", "e2cnn", "scipy", "onnx"}, "build venv is not runtime-only"
    subprocess.run(
        [
            str(py),
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(root / "dist"),
            "--workpath",
            str(root / "build"),
            str(REPO / "pyinstaller.spec"),
        ],
        check=True,
        cwd=REPO,
    )
    return root / "dist" / "EquiTriage"


# What may appear in HOME: the app's own folder (settings, log) and onnxruntime's device-id
# cache, which onnxruntime writes on import (no network traffic: see test_no_network_syscalls_at_all).
ALLOWED_IN_HOME = {".config", ".config/EquiTriage", ".cache", ".cache/Microsoft"}


def run_clean(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run with an empty environment (no Python, no venv, a bare PATH) and an empty HOME."""
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", *(f"{k}={v}" for k, v in env.items()), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def written_to_home(cwd: Path) -> set[str]:
    home = cwd / "home"
    return {str(p.relative_to(home)) for p in home.glob("*")} | {
        str(p.relative_to(home)) for p in home.glob("*/*")
    }


def test_both_programs_share_one_folder(bundle: Path) -> None:
    assert (bundle / "EquiTriage").is_file() and os.access(bundle / "EquiTriage", os.X_OK)
    assert (bundle / "equitriage-engine").is_file()
    assert (bundle / "_internal" / "assets" / "model.onnx").is_file()
    assert (bundle / "_internal" / "assets" / "demo_slide.tiff").is_file()


def test_no_heavy_or_development_packages_inside(bundle: Path) -> None:
    internal = bundle / "_internal"
    packages = {p.name.lower().split("-")[0] for p in internal.iterdir()}
    assert not packages & set(HEAVY)
    assert not list(internal.rglob("libtorch*"))
    assert not (internal / "onnxruntime" / "quantization").exists()
    assert not (internal / "onnxruntime" / "transformers").exists()


def test_bundled_engine_analyses_the_demo_slide(bundle: Path, tmp_path: Path) -> None:
    demo = bundle / "_internal" / "assets" / "demo_slide.tiff"
    proc = run_clean(
        [str(bundle / "equitriage-engine"), "analyse", str(demo), "--out", str(tmp_path / "out")], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    (folder,) = (tmp_path / "out").glob("demo_slide_*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["tiles"]["analysed"] > 100
    assert summary["model"]["path"].endswith("model.onnx")
    for name in ("tiles.csv", "heatmap.png", "overlay.png", "regions.geojson"):
        assert (folder / name).stat().st_size > 0
    # It wrote nowhere else: the output folder, and nothing of its own in HOME.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]
    assert written_to_home(tmp_path) <= ALLOWED_IN_HOME - {".config", ".config/EquiTriage"}


def test_bundled_gui_renders_a_screenshot(bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "window.png"
    proc = run_clean(
        [
            str(bundle / "EquiTriage"),
            "--screenshot",
            str(shot),
            str(bundle / "_internal" / "assets" / "demo_slide.tiff"),
        ],
        tmp_path,
        QT_QPA_PLATFORM="offscreen",
    )
    assert proc.returncode == 0, proc.stderr
    assert written_to_home(tmp_path) <= ALLOWED_IN_HOME
    with Image.open(shot) as img:
        assert img.width >= 800 and img.height >= 500
        assert len(img.convert("RGB").getcolors(1 << 20) or []) > 50  # a rendered slide, not a blank window


def test_tampered_model_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "EquiTriage"
    shutil.copytree(bundle, copy, symlinks=True)
    model = copy / "_internal" / "assets" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = run_clean([str(copy / "equitriage-engine"), "model"], tmp_path)
    assert proc.returncode == 3
    assert "sha256 mismatch" in proc.stderr and "Traceback" not in proc.stderr
    model.unlink()
    proc = run_clean([str(copy / "equitriage-engine"), "model"], tmp_path)
    assert proc.returncode == 3 and "--model" in proc.stderr
