"""EquiTriage engine: find likely breast-cancer metastases in whole-slide images, offline.

The public API is small: :func:`open_slide`, :class:`Model`, :func:`analyse_slide` and
:func:`run_batch`. Nothing here imports torch, e2cnn or Qt.
"""

from __future__ import annotations

__version__ = "0.1.0"
