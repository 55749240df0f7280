"""The ``equitriage-engine`` command's entry point (and ``python -m engine``'s).

Its signal handlers come before the command line is imported: a SIGINT or SIGTERM that arrives
while Python imports it is kept, and the command line then ends with 130/143 and one line, never
a traceback from the middle of an import.
"""

from __future__ import annotations

import signal


def main() -> int:
    """Run ``engine.cli.main`` with the signals that came while it was being imported."""
    pending: list[int] = []

    def keep(signum: int, frame: object) -> None:
        pending.append(signum)

    signal.signal(signal.SIGINT, keep)
    signal.signal(signal.SIGTERM, keep)
    from engine.cli import main as run

    return run(pending_signals=pending)
