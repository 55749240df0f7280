"""The layering rules (pyproject.toml's import-linter contracts), checked by running `lint-imports`.

engine imports no torch, e2cnn, Qt, scipy, gui or training; gui imports no torch, e2cnn or
training. import-linter reads every import statement, including those inside functions.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_import_contracts_are_kept() -> None:
    if importlib.util.find_spec("importlinter") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("import-linter is not installed (the dev extra has it)")
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout
