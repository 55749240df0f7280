"""Dropping stale answers: background work answers late, and only the latest request counts.

The window tags each slide it opens, and the analysis controller each search for regions, with
one :class:`Latest`; an answer that carries an older tag (the slide was closed or another one
opened, the threshold moved again) is dropped.
"""

from __future__ import annotations


class Latest:
    """Tags requests with increasing numbers; only an answer to the latest request is wanted.

    ``ask()`` tags a new request, which makes every older one stale; ``is_latest(tag)`` says
    whether an answer is still wanted, and ``take(tag)`` also marks the latest request answered.
    ``pending`` holds while the latest request waits for its answer; ``drop()`` makes every
    request so far stale and leaves nothing pending. Used on the UI thread only.
    """

    def __init__(self) -> None:
        self.tag = 0
        self._answered = 0

    def ask(self) -> int:
        self.tag += 1
        return self.tag

    def drop(self) -> None:
        self.tag += 1
        self._answered = self.tag

    def is_latest(self, tag: int) -> bool:
        return tag == self.tag

    def take(self, tag: int) -> bool:
        """Whether ``tag`` is the latest request's; if so, that request is answered now."""
        if tag != self.tag:
            return False
        self._answered = tag
        return True

    @property
    def pending(self) -> bool:
        return self._answered != self.tag
