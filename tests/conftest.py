"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder beside the checkout (``EQUITRIAGE_DATA`` overrides).

    Skipped where it is absent, except under CI (``CI=true``), where a missing folder fails.
    """
    root = Path(os.environ.get("EQUITRIAGE_DATA", REPO.parent / "shared" / "data"))
    if not (root / "PROVENANCE.md").is_file():
        message = f"shared data not found at {root} (set EQUITRIAGE_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI needs it")
        pytest.skip(message)
    return root
