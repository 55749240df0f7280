"""What a clinician needs to know about a model: measured accuracy and AUC with their intervals,
intended use, limits and how final the thresholds are.

Held-out metrics come from the contract (``info["heldout"]``, written by ``training evaluate
--stamp`` or ``training export --metrics``) or, for a model without them, from the shipped
model card (``MODEL_CARD.md`` beside the model) when the card names this model's version.
Nothing else is invented.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.model import Model

log = logging.getLogger(__name__)

CARD_FILE = "MODEL_CARD.md"

INTENDED_USE = (
    "A triage aid that orders reading: it ranks lymph-node H&E slides and regions by how likely "
    "they hold breast-cancer metastases, so a pathologist reads those first. Not a diagnosis; "
    "every slide must still be read in full."
)
LIMITS = (
    "Trained on PatchCamelyon (lymph-node H&E from two CAMELYON16 centres, about 0.97 µm/px); not "
    "validated on real whole slides, other tissues, stains, labs or scanners. Results on slides "
    "flagged out of distribution, or analysed with an assumed µm/px, mean little."
)
THRESHOLDS_NOTE = (
    "Thresholds are provisional: calibrated on mosaic slides of PCam patches, not on real slides."
)


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    ci95: tuple[float, float] | None

    def text(self) -> str:
        ci = "" if self.ci95 is None else f" (95% CI {self.ci95[0]:.3f} to {self.ci95[1]:.3f})"
        return f"{self.name} {self.value:.3f}{ci}"


@dataclass(frozen=True)
class ClinicalCard:
    metrics: tuple[Metric, ...]
    source: str  # where the numbers come from
    intended_use: str = INTENDED_USE
    limits: str = LIMITS
    thresholds_note: str = THRESHOLDS_NOTE

    def metrics_text(self) -> str:
        if not self.metrics:
            return "no held-out measurement recorded for this model"
        return "; ".join(m.text() for m in self.metrics) + f" ({self.source})"


def metrics_from_info(info: Any) -> tuple[Metric, ...]:
    """Accuracy and AUC from a contract's ``info["heldout"]`` (``training evaluate`` output)."""
    held = info.get("heldout") if hasattr(info, "get") else None
    out: list[Metric] = []
    if not isinstance(held, dict):
        return ()
    for key, name in (("accuracy", "accuracy"), ("auc", "AUC")):
        entry = held.get(key)
        if isinstance(entry, dict) and "value" in entry:
            ci = entry.get("ci95")
            out.append(Metric(name, float(entry["value"]), (float(ci[0]), float(ci[1])) if ci else None))
    return tuple(out)


_ROW = re.compile(r"^\|\s*(accuracy[^|]*|ROC AUC)\s*\|\s*([0-9.]+)\s*\|\s*([0-9.]+) to ([0-9.]+)\s*\|", re.M)


def metrics_from_card(text: str, version: str) -> tuple[Metric, ...]:
    """The held-out table of a model card, if the card is about model ``version``."""
    if f"`{version}`" not in text.split("\n## ", 1)[0]:
        return ()
    out = []
    for label, value, low, high in _ROW.findall(text):
        name = "AUC" if "AUC" in label else "accuracy"
        out.append(Metric(name, float(value), (float(low), float(high))))
    return tuple(out)


def clinical_card(model: Model) -> ClinicalCard:
    metrics = metrics_from_info(model.contract.info)
    if metrics:
        n = model.contract.info.get("heldout", {}).get("heldout_patches")
        return ClinicalCard(metrics, f"held-out PCam patches{f', n = {n}' if n else ''}, from the model")
    card = Path(model.path).with_name(CARD_FILE)
    try:
        text = card.read_text(encoding="utf-8")
    except OSError:
        return ClinicalCard((), "")
    metrics = metrics_from_card(text, model.version)
    return ClinicalCard(metrics, f"held-out PCam patches, from {CARD_FILE}" if metrics else "")
