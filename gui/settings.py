"""User settings, persisted with QSettings (an INI file per user; tests point it at a tmp dir)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.pipeline import AnalysisParams

ORGANISATION = "EquiTriage"
APPLICATION = "EquiTriage"
MAX_RECENT = 10


def default_output_dir() -> Path:
    return Path.home() / "EquiTriage results"


def default_threads() -> int:
    """Leave one core to the window on small machines."""
    return max(1, (os.cpu_count() or 2) - 1)


def read_threads() -> int:
    """Slide-reading threads of an analysis: fewer on small machines, so the window stays smooth
    (two readers on two cores measurably starve the UI thread)."""
    return max(1, min(2, (os.cpu_count() or 2) - 2))


def analysis_params(settings: Settings) -> AnalysisParams:
    """What an analysis in the app (one slide or a folder) is run with."""
    return AnalysisParams(stride_px=settings.stride_px or None, read_threads=read_threads())


@dataclass
class Settings:
    """What the user chose; ``model_path`` empty means the shipped model."""

    output_dir: str = field(default_factory=lambda: str(default_output_dir()))
    model_path: str = ""
    threads: int = field(default_factory=default_threads)
    stride_px: int = 0  # 0: the model's input size (no overlap)
    opacity: float = 0.8
    threshold: float = 0.5  # heatmap display threshold: tiles below it are not coloured
    heatmap_visible: bool = True
    recent_files: list[str] = field(default_factory=list)
    last_folder: str = ""

    def add_recent(self, path: Path) -> None:
        """Remember ``path`` absolute, so it opens whatever folder the app starts from. Links are
        not followed: opened again, it is the same input with the same results (as the engine
        names them, :func:`engine.identity.results_name`)."""
        text = os.path.abspath(path)
        self.recent_files = [text, *[p for p in self.recent_files if p != text]][:MAX_RECENT]


def qsettings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)


def load_settings(store: QSettings | None = None) -> Settings:
    """Settings from the store; unreadable values fall back to defaults."""
    store = store or qsettings()
    out = Settings()
    for f in fields(Settings):
        default = getattr(out, f.name)
        raw = store.value(f.name)
        if raw is None:
            continue
        try:
            if isinstance(default, bool):
                value: object = raw if isinstance(raw, bool) else str(raw).lower() == "true"
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            elif isinstance(default, list):
                value = [str(v) for v in raw] if isinstance(raw, list) else ([str(raw)] if raw else [])
            else:
                value = str(raw)
        except (TypeError, ValueError):
            continue
        setattr(out, f.name, value)
    if out.threads < 1:
        out.threads = default_threads()
    return out


def save_settings(settings: Settings, store: QSettings | None = None) -> None:
    store = store or qsettings()
    for f in fields(Settings):
        store.setValue(f.name, getattr(settings, f.name))
    store.sync()
