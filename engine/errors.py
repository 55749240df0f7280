"""The one exception tree of EquiTriage. Every message says what the user can do about it."""

from __future__ import annotations


class EquiTriageError(Exception):
    """Base of every error the engine raises on purpose; its message is shown to the user."""


class SlideError(EquiTriageError):
    """A slide could not be opened or read."""


class SlideNotFoundError(SlideError):
    """The slide path does not exist or is not a file."""


class UnsupportedSlideError(SlideError):
    """No reader recognises the file."""


class SlideReadError(SlideError):
    """The file opened but its pixels or properties could not be read."""


class MissingMppError(SlideError):
    """The slide does not say how many µm one pixel covers."""


class SlideTooSmallError(SlideError):
    """The slide is smaller than one model patch."""


class ModelError(EquiTriageError):
    """The model file is missing, unreadable or carries no valid contract."""


class ModelNotFoundError(ModelError):
    """No model at the given path, or none shipped."""


class ContractError(ModelError):
    """The model's metadata has no valid EquiTriage contract."""


class OutputError(EquiTriageError):
    """Results could not be written."""


class CancelledError(EquiTriageError):
    """The user cancelled the analysis."""
