"""``equitriage-engine`` / ``python -m engine``: triage slides from the command line.

Exit codes: 0 all good; 1 at least one slide failed (or ``info`` could not read its slide); 2 usage
error; 3 cannot start or go on (model, or output folder unusable, full or removed); 4 nothing to
analyse (the batch folder is missing, not a folder, or holds no slides); 130 interrupted by
SIGINT (Ctrl-C), 143 by SIGTERM: the slide in progress is abandoned, finished ones are kept, and
the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from engine import __version__
from engine.errors import CancelledError, EquiTriageError, OutputError, Remedy

log = logging.getLogger("engine.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_START, EXIT_NOTHING = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM  # 130, 143

# What to do, in this command line's words; remedies not named here keep the engine's wording.
CLI_REMEDIES: dict[Remedy, str] = {
    Remedy.USE_SLIDE_FILE: "give a slide file, or use `batch` for a folder of slides",
    Remedy.USE_FOLDER: "use `analyse` for one slide",
    Remedy.SET_MPP: "pass --mpp (e.g. --mpp 0.25 for a 40x scan, 0.5 for 20x)",
    Remedy.CHECK_MPP: "check its µm/px (--mpp overrides the file's)",
    Remedy.CHOOSE_MODEL: "pass --model PATH to an EquiTriage ONNX model (or set EQUITRIAGE_MODEL)",
    Remedy.CHECK_MODEL_PATH: "check the --model path",
    Remedy.REEXPORT_MODEL: (
        "re-export it (`python -m training export`) or pass --model with one made for this EquiTriage version"
    ),
    Remedy.CHOOSE_OUTPUT_DIR: "choose an output folder you can write to (--out)",
    Remedy.ANALYSE_AGAIN: "run `analyse` on the slide again",
    Remedy.SECURE_SCHEDULER: (
        "use a tls:// scheduler with --tls-ca-file, --tls-cert and --tls-key, or pass --insecure on a "
        "network you trust"
    ),
}
BATCH_REMEDIES: dict[Remedy, str] = {
    **CLI_REMEDIES,
    Remedy.SET_MPP: (
        "pass --default-mpp for slides that do not record it (e.g. --default-mpp 0.25 for 40x scans, "
        "0.5 for 20x)"
    ),
}


def remedies_for(command: str) -> dict[Remedy, str]:
    """The remedy wording for ``command``: a folder is better served by ``--default-mpp``."""
    return BATCH_REMEDIES if command == "batch" else CLI_REMEDIES


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
    run_opts.add_argument("--threads", type=_positive_int, help="inference threads (default: all cores)")
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
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet, args.verbose)
    if hasattr(args, "min_tissue") and not 0 <= args.min_tissue <= 1:
        parser.error("--min-tissue must be between 0 and 1")
    signals = _Signals(pending_signals)
    try:
        with signals:
            code: int = args.func(args, signals)
            signals.check()
        return code
    except (KeyboardInterrupt, CancelledError):
        _error("interrupted; finished slides are kept, re-run the same command to resume")
        return 128 + (signals.received or signal.SIGINT)
    except OutputError as exc:
        _error(exc.message(remedies_for(args.command)))
        return EXIT_START
    except EquiTriageError as exc:
        _error(exc.message(remedies_for(args.command)))
        return EXIT_START if args.command in ("analyse", "analyze", "batch", "model") else EXIT_FAILED


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
        if self._pending:  # arrived while Python was starting (see engine/__main__.py)
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


def _error(message: str) -> None:
    sys.stderr.write(f"equitriage-engine: error: {message}\n")


def _out(text: str, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def _run(args: argparse.Namespace, jobs: list[Any], resume: bool, signals: _Signals) -> int:
    from engine.batch import SlideOutcome, run_batch
    from engine.model import Model
    from engine.outputs import check_writable
    from engine.pipeline import AnalysisParams

    check_writable(args.out)
    model = Model.load(args.model, threads=args.threads)
    params = AnalysisParams(
        stride_px=args.stride,
        min_tissue_fraction=args.min_tissue,
        batch_size=args.batch_size,
        read_threads=args.read_threads,
    )
    show_bars = not args.quiet and sys.stderr.isatty()
    bar = _TileBar(show_bars)
    remedies = remedies_for(args.command)

    def on_done(outcome: SlideOutcome) -> None:
        bar.close()
        if outcome.status == "cached":
            log.info("%s: already analysed with this model, skipped", outcome.job.label)
        elif outcome.status == "failed":
            log.warning("%s", outcome.message(remedies))

    cancel = signals.cancel
    signals.check()
    if getattr(args, "workers", None) or getattr(args, "scheduler", None):
        outcomes = _run_on_cluster(args, jobs, model, params, show_bars, on_done, cancel)
        return _report(args, outcomes, remedies)
    try:
        outcomes = run_batch(
            jobs,
            args.out,
            model,
            params,
            mpp=args.mpp,
            default_mpp=args.default_mpp,
            on_start=bar.start,
            on_done=on_done,
            progress=bar.update,
            cancel=cancel,
            resume=resume,
        )
    finally:
        bar.close()
    return _report(args, outcomes, remedies)


def _report(args: argparse.Namespace, outcomes: list[Any], remedies: dict[Remedy, str]) -> int:
    from engine.batch import ranked

    _out(_table(ranked(outcomes), remedies))
    failed = sum(o.status == "failed" for o in outcomes)
    _out(
        f"{len(outcomes) - failed} of {len(outcomes)} slides analysed; results in {args.out}",
        sys.stderr if args.quiet else sys.stdout,
    )
    return EXIT_FAILED if failed else EXIT_OK


def _run_on_cluster(
    args: argparse.Namespace,
    jobs: list[Any],
    model: Any,
    params: Any,
    show_bar: bool,
    on_done: Callable[[Any], None],
    cancel: threading.Event,
) -> list[Any]:
    """The batch on a Dask cluster (engine.cluster): a slide bar with ETA instead of tile bars."""
    from engine.cluster import (
        ClusterRequest,
        check_address,
        local_cluster,
        remote_cluster,
        run_cluster_batch,
        tls_security,
        usable_cores,
    )

    _quiet_dask(args.verbose)
    if args.workers:
        threads = args.threads or max(1, usable_cores() // args.workers)
        cluster = local_cluster(args.workers, verbose=args.verbose)
    else:
        address = check_address(args.scheduler, args.insecure)
        tls = address.startswith("tls://")
        security = tls_security(args.tls_ca_file, args.tls_cert, args.tls_key) if tls else None
        threads = args.threads
        cluster = remote_cluster(address, security)
    request = ClusterRequest.for_model(
        model, args.out, params, mpp=args.mpp, default_mpp=args.default_mpp, threads=threads
    )
    bar: Any = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="slide", dynamic_ncols=True)

    def done(outcome: Any) -> None:
        if bar is not None:
            bar.update(1)
        if outcome.status == "ok":
            log.info("%s: score %s, %s", outcome.job.name, outcome.score, outcome.summary.category)
        on_done(outcome)

    try:
        with cluster as client:
            where = f"{args.workers} local workers" if args.workers else args.scheduler
            log.info("analysing on a Dask cluster (%s)", where)
            return run_cluster_batch(client, jobs, request, on_done=done, cancel=cancel)
    finally:
        if bar is not None:
            bar.close()


def _quiet_dask(verbose: bool) -> None:
    """Dask's own chatter (cluster start and stop) only with --verbose.

    Importing distributed sets its loggers' levels from Dask's configuration, so this comes after.
    """
    try:
        import distributed  # noqa: F401
    except ImportError:
        return  # engine.cluster says what to install
    level = logging.DEBUG if verbose else logging.WARNING
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "dask")]
    for name in names:
        logging.getLogger(name).setLevel(level)


class _TileBar:
    """A tqdm bar per slide on a terminal; nothing when piped or quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._name = ""

    def start(self, job: Any) -> None:
        self._name = job.label

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self._name, unit="tile", leave=False, dynamic_ncols=True)
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _table(outcomes: list[Any], remedies: dict[Remedy, str]) -> str:
    from engine.caveats import short_flags

    rows = [("rank", "slide", "status", "score", "category", "tumour mm²", "")]
    for i, o in enumerate(outcomes, start=1):
        s = o.summary
        score = "" if s is None or s.score is None else f"{s.score:.3f}"
        area = "" if s is None else f"{s.verdict.tumour_area_mm2:.2f}"
        category = "" if s is None else s.category
        note = o.message(remedies) or ("" if s is None else short_flags(s))  # OOD, assumed µm/px
        rows.append((str(i), o.job.label, o.status, score, category, area, note))
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    return "\n".join(
        "  ".join(cell.ljust(widths[c]) if c < 6 else cell for c, cell in enumerate(r)).rstrip() for r in rows
    )


def cmd_analyse(args: argparse.Namespace, signals: _Signals) -> int:
    from engine.batch import job_for

    jobs = list({job.name: job for job in map(job_for, args.slides)}.values())
    return _run(args, jobs, resume=False, signals=signals)


def cmd_batch(args: argparse.Namespace, signals: _Signals) -> int:
    from engine.batch import discover_slides
    from engine.errors import SlideNotFoundError

    try:
        jobs = discover_slides(args.folder, args.recursive, exclude=args.out)
    except SlideNotFoundError as exc:
        _error(exc.message(remedies_for(args.command)))
        return EXIT_NOTHING
    if not jobs:
        _error(f"no slides found in {args.folder}" + ("" if args.recursive else " (try --recursive)"))
        return EXIT_NOTHING
    log.info("%d slides in %s", len(jobs), args.folder)
    return _run(args, jobs, resume=True, signals=signals)


def cmd_info(args: argparse.Namespace, signals: _Signals) -> int:
    from engine.slide import open_slide

    with open_slide(args.slide) as slide:
        facts = slide.describe()
        facts["properties"] = dict(slide.properties)
    if args.json:
        _out(json.dumps(facts, indent=2, ensure_ascii=False))
    else:
        _print_facts(facts, skip={"properties"})
        if facts["mpp"] is None:
            _out("note: no µm/px in this file; pass --mpp when analysing it (--default-mpp in a batch)")
    return EXIT_OK


def cmd_model(args: argparse.Namespace, signals: _Signals) -> int:
    from engine.model import Model

    model = Model.load(args.model, threads=1)
    contract = json.loads(model.contract.to_json())
    card_path = model.path.with_name("MODEL_CARD.md")
    facts = {"path": str(model.path), "sha256": model.sha256, **contract}
    if args.json:
        _out(json.dumps(facts, indent=2, ensure_ascii=False))
        return EXIT_OK
    _print_facts(facts, skip=set())
    if card_path.is_file():
        _out("\n" + card_path.read_text(encoding="utf-8"))
    return EXIT_OK


def _print_facts(facts: dict[str, Any], skip: set[str], write: Callable[[str], None] = _out) -> None:
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key not in skip:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            write(f"{key.ljust(width)}  {text}")


if __name__ == "__main__":
    raise SystemExit(main())
