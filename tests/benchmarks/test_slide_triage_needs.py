"""The what-if of ``benchmarks/slide_triage_needs.py``: normal tiles' log-odds lowered."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.slide_triage_needs import lower_normals
from benchmarks.triage_slides import VARIANTS, PatchTable


def _table() -> PatchTable:
    probs = np.tile(np.array([[0.5], [0.9], [0.2], [0.99]], np.float32), (1, VARIANTS))
    labels = np.array([0, 0, 1, 1])
    return PatchTable(probs, labels, np.arange(4), np.array([0, 2]), np.array([1, 3]))


def test_normals_lose_delta_in_log_odds_and_tumour_keeps_its_probabilities() -> None:
    table = _table()
    out = lower_normals(table, np.log(9.0))  # odds / 9
    assert out.probs[0] == pytest.approx(0.1, abs=1e-6)  # odds 1 -> 1/9
    assert out.probs[1] == pytest.approx(0.5, abs=1e-6)  # odds 9 -> 1
    assert np.array_equal(out.probs[2:], table.probs[2:])
    assert np.array_equal(out.labels, table.labels) and out.probs.dtype == np.float32


def test_no_delta_changes_nothing() -> None:
    table = _table()
    assert np.allclose(lower_normals(table, 0.0).probs, table.probs, atol=1e-6)
