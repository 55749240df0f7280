"""``engine`` and ``gui`` never import ``training``."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_engine_and_gui_do_not_import_training() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+training\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(REPO))
        for package in ("engine", "gui")
        for path in (REPO / package).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
