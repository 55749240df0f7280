"""The model, loaded once in the background for the settings in force; callers queue for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal

from engine.model import Model
from engine.model_card import ClinicalCard
from gui.workers import ModelLoader

ModelKey = tuple[str, int]  # (model path, "" for the shipped one; inference threads)


class ModelManager(QObject):
    """``request(key, then)`` calls ``then(model)`` once the model for ``key`` is loaded;
    ``with_model(then)`` does it for the key the settings ask for now (``wanted()``).

    ``loading``/``loaded(model)``/``failed(message, loud)`` report to the window and controllers;
    a failure is ``loud`` when someone (not only a background warm-up) was waiting for the model.
    """

    loading = Signal()
    loaded = Signal(object)
    failed = Signal(str, bool)

    def __init__(
        self, pool: QThreadPool, wanted: Callable[[], ModelKey], parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._pool = pool
        self.wanted = wanted
        self.model: Model | None = None
        self.card: ClinicalCard | None = None  # the model's, read with it in the worker
        self.error = ""
        self.key: ModelKey | None = None
        self._wanted: ModelKey | None = None
        self._waiters: list[Callable[[Model], None]] = []
        self._loading = False
        self._loud = False
        self._job: ModelLoader | None = None

    def current(self, key: ModelKey) -> Model | None:
        """The loaded model if it matches ``key``."""
        return self.model if self.key == key else None

    def model_now(self) -> Model | None:
        """The loaded model, if it is the one the settings ask for."""
        return self.current(self.wanted())

    def with_model(self, then: Callable[[Model], None], quiet: bool = False) -> None:
        """Call ``then(model)`` once the model the settings ask for is loaded."""
        self.request(self.wanted(), then, quiet)

    def drop_waiters(self) -> None:
        """Forget what was to run once the model loads (the window is closing)."""
        self._waiters.clear()

    def forget(self) -> None:
        """Drop the loaded model (the settings changed)."""
        self.model, self.card, self.key = None, None, None

    def request(self, key: ModelKey, then: Callable[[Model], None], quiet: bool = False) -> None:
        model = self.current(key)
        if model is not None:
            then(model)
            return
        self._waiters.append(then)
        self._loud = self._loud or not quiet
        self._wanted = key
        if self._loading:
            return
        self._loading = True
        job = ModelLoader(0, Path(key[0]) if key[0] else None, key[1])
        job.signals.done.connect(lambda _t, loaded: self._loaded(key, *loaded))
        job.signals.failed.connect(lambda _t, message: self._failed(message))
        self._job = job
        self.loading.emit()
        self._pool.start(job)

    def _loaded(self, key: ModelKey, model: Model, card: ClinicalCard) -> None:
        loud, self._loud = self._loud, False
        self._loading = False
        self.model, self.card, self.key, self.error = model, card, key, ""
        waiters, self._waiters = self._waiters, []
        self.loaded.emit(model)
        if self._wanted is not None and key != self._wanted:  # settings changed while loading
            for w in waiters:
                self.request(self._wanted, w, quiet=not loud)
            return
        for w in waiters:
            w(model)

    def _failed(self, message: str) -> None:
        loud, self._loud = self._loud, False
        self._loading = False
        self._waiters.clear()
        self.model, self.card, self.key, self.error = None, None, None, message
        self.failed.emit(message, loud)
