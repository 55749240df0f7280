"""The neighbour vote of ``benchmarks/feature_neighbours.py``."""

from __future__ import annotations

import numpy as np

from benchmarks.feature_neighbours import neighbour_votes, unit_rows


def test_rows_are_standardised_then_unit_length() -> None:
    f = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
    rows = unit_rows(f, f.mean(axis=0), f.std(axis=0))
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    assert np.allclose(rows[0], -rows[1], atol=1e-6)  # the two scales no longer matter


def test_each_query_takes_the_labels_of_its_nearest_reference_rows() -> None:
    angles = np.linspace(0, np.pi / 2, 10)  # references on a quarter circle, the first 5 labelled 1
    reference = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    labels = np.array([1] * 5 + [0] * 5, np.int64)
    query = reference[[0, 9, 4]]
    votes = neighbour_votes(query, reference, labels, k=3, chunk=2)  # chunks of 2 and 1 rows
    assert votes.tolist() == [1.0, 0.0, 2 / 3]  # the middle one: rows 3, 4 (label 1) and 5 (0)
