"""Minimal finished-analysis summaries for tests that need one without running an analysis."""

from __future__ import annotations

from typing import Any

from engine.summary import SlideSummary, TileCounts

_TILE_FIELDS = tuple(TileCounts.__dataclass_fields__)


def summary_of(**fields: Any) -> SlideSummary:
    """A format-2 summary with placeholder model, parameters and tile counts; ``fields`` (score,
    category, thresholds, slide, out_of_distribution ...) are set on top."""
    doc: dict[str, Any] = {
        "status": "ok",
        "format_version": 2,
        "input": None,
        "model": {"version": "v1", "sha256": "0" * 64, "input_px": 95, "mpp": 0.972},
        "parameters": {"stride_px": 95},
        "tiles": dict.fromkeys(_TILE_FIELDS, 1),
    }
    return SlideSummary.from_json({**doc, **fields})
