"""Module seams: export and quantization do not load the training loop; the pure modules and the
mosaic scripts load no torch or onnx. Each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("modules", "absent"),
    [
        (["training.export", "training.quantize", "training.cli"], ["training.train"]),
        (["training.ranges", "training.field_of_view"], ["torch", "onnx", "onnxruntime", "e2cnn"]),
        (["scripts.mosaic_slide", "scripts.pcam_patches"], ["torch", "onnx", "e2cnn"]),
    ],
)
def test_importing_does_not_load(modules: list[str], absent: list[str]) -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {absent!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
