"""``python -m engine``."""

import signal


def _early_exit(signum: int, frame: object) -> None:
    """A signal before the command line has set up its own handling: nothing is open yet."""
    raise SystemExit(128 + signum)


signal.signal(signal.SIGINT, _early_exit)
signal.signal(signal.SIGTERM, _early_exit)

from engine.cli import main  # noqa: E402 - the handlers come first

raise SystemExit(main())
