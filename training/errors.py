"""Errors the training command line words as one line and exit status 2."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked (missing, unreadable, a resume checkpoint, another
    architecture); the message says what to pass instead."""
