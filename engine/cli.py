"""``equitriage-engine`` / ``python -m engine``: triage slides from the command line.

Exit codes: 0 all good; 1 at least one slide failed (or ``info`` could not read its slide); 2 usage
error; 3 cannot start or go on (model, or output folder unusable, full or removed); 4 nothing to
analyse (the batch folder is missing, not a folder, or holds no slides); 130 interrupted by
SIGINT (Ctrl-C), 143 by SIGTERM: the slide in progress is abandoned, finished ones are kept, and
the same command resumes.

This module is the entry point: the options (:func:`build_parser`), signals, logging and the
mapping of errors to exit codes (:func:`main`). What each command does is in
:mod:`engine.commands`.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine import __version__
from engine.commands import (
    EXIT_FAILED,
    EXIT_START,
    cmd_analyse,
    cmd_batch,
    cmd_info,
    cmd_model,
    remedies_for,
    say_error,
)
from engine.errors import CancelledError, EquiTriageError, OutputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equitriage-engine",
        description="Find likely breast-cancer metastases in lymph-node slides, offline.",
        epilog=(
            "Exit codes: 0 ok, 1 a slide failed, 2 usage, 3 cannot start (model, output folder), "
            "4 no slides to analyse, 130 interrupted (SIGINT), 143 terminated (SIGTERM)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only errors and the result table")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run_opts = argparse.ArgumentParser(add_help=False, parents=[common])
    run_opts.add_argument("--out", required=True, type=Path, help="folder for the results")
    run_opts.add_argument("--model", type=Path, help="EquiTriage ONNX model (default: the shipped one)")
    mpp_opts = run_opts.add_mutually_exclusive_group()
    mpp_opts.add_argument(
        "--mpp",
        type=_positive_float,
        help="µm per level-0 pixel of every slide, overriding what the files record",
    )
    mpp_opts.add_argument(
        "--default-mpp",
        type=_positive_float,
        metavar="MPP",
        help="µm per level-0 pixel only for slides whose file does not record it",
    )
    run_opts.add_argument(
        "--stride", type=_positive_int, help="tile stride in model pixels (default: patch size)"
    )
    run_opts.add_argument(
        "--min-tissue", type=float, default=0.25, help="tissue fraction a tile needs (0..1)"
    )
    run_opts.add_argument(
        "--threads",
        type=_positive_int,
        help="inference threads per slide (default: all cores; with --workers N, cores / N; on a "
        "cluster, each machine's share)",
    )
    run_opts.add_argument("--read-threads", type=_positive_int, default=2, help="slide reading threads")
    run_opts.add_argument("--batch-size", type=_positive_int, default=64, help="patches per inference batch")

    p = sub.add_parser("analyse", aliases=["analyze"], parents=[run_opts], help="analyse one or more slides")
    p.add_argument("slides", nargs="+", type=Path, metavar="SLIDE")
    p.set_defaults(func=cmd_analyse)

    p = sub.add_parser("batch", parents=[run_opts], help="analyse every slide of a folder (resumable)")
    p.add_argument("folder", type=Path, metavar="FOLDER")
    p.add_argument("--recursive", action="store_true", help="include sub-folders")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="analyse on a local Dask cluster of N worker processes (loopback only; needs the cluster extra)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="analyse on an existing Dask cluster (tls://HOST:8786); slides, model and --out must be "
        "on a filesystem every worker sees",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a plain-TCP --scheduler off this machine (anyone who reaches it can run code)",
    )
    p.add_argument("--tls-ca-file", type=Path, metavar="PEM", help="CA certificate for a tls:// scheduler")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="this client's certificate")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="this client's private key")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("info", parents=[common], help="properties, levels and µm/px of a slide")
    p.add_argument("slide", type=Path, metavar="SLIDE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("model", parents=[common], help="the model's contract and card")
    p.add_argument("--model", type=Path, help="EquiTriage ONNX model (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model)
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def main(argv: Sequence[str] | None = None, pending_signals: list[int] | None = None) -> int:
    """Run the command line; ``pending_signals`` are signals caught before it started."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 never crashes a print
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet, args.verbose)
    if hasattr(args, "min_tissue") and not 0 <= args.min_tissue <= 1:
        parser.error("--min-tissue must be between 0 and 1")
    signals = _Signals(pending_signals)
    try:
        with signals:
            code: int = args.func(args, signals.cancel)
            signals.check()
            sys.stdout.flush()  # a closed pipe shows here, not at exit after the handlers below
        return code
    except (KeyboardInterrupt, CancelledError):
        return _interrupted(signals.received)
    except BrokenPipeError:  # stdout was closed early (`| head`): the rest is not wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error again at exit
        return EXIT_FAILED
    except EquiTriageError as exc:
        if signals.received:  # a call that could not see the cancel failed after it (a connect)
            return _interrupted(signals.received)
        say_error(exc.message(remedies_for(args.command)))
        start = isinstance(exc, OutputError) or args.command in ("analyse", "analyze", "batch", "model")
        return EXIT_START if start else EXIT_FAILED


def _interrupted(received: int | None) -> int:
    say_error("interrupted; finished slides are kept, re-run the same command to resume")
    return 128 + (received or signal.SIGINT)


class _Signals:
    """SIGINT and SIGTERM, handled so that an interrupted run always ends cleanly.

    A signal never raises: it only records itself and sets ``cancel``. The pipeline stops its
    readers, joins them and closes the slide before raising CancelledError, a result being
    written is finished, and the batch stops before the next slide. (Raising at an arbitrary
    moment could land inside an import or a C extension, or while a slide is open.) Whatever
    the command was doing, it then ends with 128 + the signal number.
    """

    def __init__(self, pending: list[int] | None = None) -> None:
        self.cancel = threading.Event()
        self.received: int | None = None
        self._pending = pending if pending is not None else []
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.received = self.received or signum
        self.cancel.set()

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
            # A file-size limit must give an error (EFBIG), not kill the process.
            if hasattr(signal, "SIGXFSZ"):
                self._previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if self._pending:  # arrived while Python was starting (see engine/launch.py)
            self._handle(self._pending[0], None)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raise CancelledError if a signal has come."""
        if self.cancel.is_set():
            raise CancelledError("interrupted")


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-slide messages only; a slide's failure is logged as a warning by the batch.
    logging.getLogger("engine.model").setLevel(max(level, logging.WARNING))
    logging.getLogger("engine.pipeline").setLevel(max(level, logging.WARNING))


if __name__ == "__main__":
    raise SystemExit(main())
