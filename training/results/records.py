"""The study's evaluated models as records, read from a study folder, and how they are grouped."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCH_LABEL = {"conventional": "conventional MobileNetV2", "equivariant": "equivariant MobileNetV2"}


@dataclass(frozen=True)
class Record:
    """One evaluated model: which run, which variant, and its held-out metrics."""

    run: str
    arch: str
    group_order: int
    seed: int
    train_patches: int
    variant: str
    metrics: dict[str, Any]
    width: float = 0.5
    jitter: float = 0.0
    epochs: int | None = None
    selection_loss: float | None = None

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"]["value"])

    @property
    def auc(self) -> float:
        return float(self.metrics["auc"]["value"])

    @property
    def rot90(self) -> float:
        return float(self.metrics["rot90_max_abs_dp"])

    def off_axis_dp(self) -> float | None:
        """Mean |dp| over the curve's angles that are not multiples of 90 degrees (None: no curve)."""
        curve = self.metrics.get("rotation_curve")
        if not curve:
            return None
        values = [v for a, v in zip(curve["angles_deg"], curve["mean_abs_dp"], strict=True) if a % 90]
        return statistics.fmean(values)


def load_study(folder: Path) -> list[Record]:
    """Every ``<run>/<variant>/metrics.json`` under ``folder`` with its ``<run>/run.json``."""
    records = []
    for run_json in sorted(folder.glob("*/run.json")):
        run = json.loads(run_json.read_text())
        for metrics_json in sorted(run_json.parent.glob("*/metrics.json")):
            records.append(
                Record(
                    run=run_json.parent.name,
                    arch=run["arch"],
                    group_order=int(run["group_order"]),
                    seed=int(run["seed"]),
                    train_patches=int(run["train_patches"]),
                    variant=metrics_json.parent.name,
                    metrics=json.loads(metrics_json.read_text()),
                    width=float(run.get("width", 0.5)),
                    jitter=float(run.get("jitter") or 0.0),
                    epochs=run.get("epochs"),
                    selection_loss=run.get("selection_loss"),
                )
            )
    if not records:
        raise FileNotFoundError(f"{folder}: no evaluated runs; run 'python -m training study' first")
    return records


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def select(records: list[Record], **want: Any) -> list[Record]:
    """The records whose fields have the given values, e.g. ``select(records, arch="equivariant")``."""
    return [r for r in records if all(getattr(r, k) == v for k, v in want.items())]


def full_size(records: list[Record]) -> int:
    """The largest training-set size in the study (the 'all 20k' runs)."""
    return max(r.train_patches for r in records)


def archs(records: list[Record]) -> list[str]:
    """The architectures in the study, conventional first."""
    return [a for a in ("conventional", "equivariant") if any(r.arch == a for r in records)]


def arch_label(records: list[Record], arch: str) -> str:
    """``arch`` as the tables and plots name it, with the study's groups (e.g. ``(C4/C8)``)."""
    groups = sorted({r.group_order for r in records if r.arch == arch})
    suffix = f" (C{'/C'.join(map(str, groups))})" if arch == "equivariant" else ""
    return ARCH_LABEL[arch] + suffix
