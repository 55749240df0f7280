"""``python -m engine``."""

import signal
import sys

# Signals that come while Python imports the command line are kept and handled by it (exit
# 130/143), never raised in the middle of an import.
_pending: list[int] = []


def _keep(signum: int, frame: object) -> None:
    _pending.append(signum)


signal.signal(signal.SIGINT, _keep)
signal.signal(signal.SIGTERM, _keep)

from engine.cli import main  # noqa: E402 - the handlers come first

sys.exit(main(pending_signals=_pending))
