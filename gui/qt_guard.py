"""Refuse PySide6 builds that lose references to None and True (they crash the app).

Seen with PySide6 6.12.0 on Python 3.11: every call of a Qt method returning ``void`` releases a
reference to None it never took, and ``Signal.emit`` one to True; after a few thousand calls the
interpreter aborts ("deallocating None"). pyproject pins ``PySide6-Essentials<6.12``; this check
turns an install that slipped past the pin into a clear startup error instead of a later crash.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QTimer

PROBE_CALLS = 64
_SINGLETONS: tuple[object, ...] = (None, True, False)


def leaking_singletons() -> list[object]:
    """The singletons whose reference count Qt calls wrongly decrease in this build."""
    if sys.version_info >= (3, 12):  # immortal objects: the fault cannot crash
        return []
    timer = QTimer()
    before = [sys.getrefcount(obj) for obj in _SINGLETONS]
    for _ in range(PROBE_CALLS):
        timer.stop()  # void
        timer.isActive()  # bool (False)
    timer.setSingleShot(True)
    for _ in range(PROBE_CALLS):
        timer.isSingleShot()  # bool (True)
    after = [sys.getrefcount(obj) for obj in _SINGLETONS]
    return [obj for obj, b, a in zip(_SINGLETONS, before, after, strict=True) if a < b - PROBE_CALLS // 2]


def check() -> None:
    """Raise a RuntimeError that says what to install if this PySide6 build is affected."""
    if leaking_singletons():
        import PySide6

        raise RuntimeError(
            f"PySide6 {PySide6.__version__} has a reference-counting bug that crashes EquiTriage on "
            f"Python {sys.version_info[0]}.{sys.version_info[1]}; install a working version with "
            '`pip install "PySide6-Essentials<6.12"`'
        )
