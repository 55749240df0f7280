"""Filling ``docs/results.md``: its generated blocks replaced, its plots redrawn, its prose kept."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from engine.outputs import write_text_atomic
from training.results.plots import plot_ablation, plot_data_efficiency, plot_rotation
from training.results.records import Record, load_study
from training.results.tables import (
    table_ablation,
    table_data_efficiency,
    table_main,
    table_recipe,
    table_speed,
)

log = logging.getLogger(__name__)

BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n).*?(<!-- /results:(?P=name) -->)", re.S)


def fill_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replace the body of every ``<!-- results:NAME -->`` block named in ``blocks``."""
    found = {m.group("name") for m in BLOCK.finditer(text)}
    missing = set(blocks) - found
    if missing:
        raise ValueError(
            f"the document has no block(s) {sorted(missing)}; add "
            + ", ".join(f"'<!-- results:{m} -->' ... '<!-- /results:{m} -->'" for m in sorted(missing))
        )

    def body(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in blocks:
            return match.group(0)
        return f"{match.group(1)}{blocks[name].rstrip()}\n{match.group(3)}"

    return BLOCK.sub(body, text)


def build_blocks(records: list[Record], speed: dict[str, Any] | None) -> dict[str, str]:
    """Every generated block of the document, by name."""
    blocks = {
        "main": table_main(records),
        "ablation": table_ablation(records),
        "data-efficiency": table_data_efficiency(records),
    }
    if speed is not None:
        blocks["speed"] = table_speed(speed)
    return blocks


def write_results(
    study: Path, doc: Path, figures: Path, speed_json: Path | None, recipe: tuple[Path, Path] | None = None
) -> dict[str, str]:
    """Fill ``doc``'s blocks and write the plots into ``figures``; returns the blocks.

    ``recipe`` is (study folder, speed JSON) of the recipe comparison, for the ``recipe`` block.
    """
    records = load_study(study)
    speed = json.loads(speed_json.read_text()) if speed_json else None
    blocks = build_blocks(records, speed)
    if recipe is not None:
        blocks["recipe"] = table_recipe(load_study(recipe[0]), json.loads(recipe[1].read_text()))
    figures.mkdir(parents=True, exist_ok=True)
    plot_rotation(records, figures / "rotation_curves.png")
    plot_data_efficiency(records, figures / "data_efficiency.png")
    plot_ablation(records, figures / "quantization_ablation.png")
    write_text_atomic(doc, fill_blocks(doc.read_text(encoding="utf-8"), blocks))
    runs = {r.run for r in records}
    log.info("filled %s from %d models in %d runs; plots in %s", doc, len(records), len(runs), figures)
    return blocks
