"""What each command of ``equitriage-engine`` does, and how it words its results and errors.

The argument parser, signal handling and the mapping of errors to exit codes are in
:mod:`engine.cli`; a command here gets the parsed arguments and the run's ``cancel`` event and
returns an exit code. Heavy modules (the model, Dask) are imported inside the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from engine.errors import CancelledError, Remedy

log = logging.getLogger(__name__)

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


def say_error(message: str) -> None:
    """One line on stderr, as argparse words its own errors."""
    sys.stderr.write(f"equitriage-engine: error: {message}\n")


def _out(text: str, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def _run(args: argparse.Namespace, jobs: list[Any], resume: bool, cancel: threading.Event) -> int:
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
        elif outcome.status in ("failed", "busy"):
            log.warning("%s", outcome.message(remedies))

    if cancel.is_set():  # a signal came while the model loaded
        raise CancelledError("interrupted")
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
    busy = sum(o.status == "busy" for o in outcomes)
    left = f", {busy} left to another process writing them" if busy else ""
    _out(
        f"{len(outcomes) - failed - busy} of {len(outcomes)} slides analysed{left}; results in {args.out}",
        sys.stderr if args.quiet else sys.stdout,
    )
    # batch leaves a slide that another process is writing to it; analyse was asked for that slide
    if failed or (busy and args.command in ("analyse", "analyze")):
        return EXIT_FAILED
    return EXIT_OK


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
    from engine.cluster import check_address, local_cluster, remote_cluster, run_cluster_batch, tls_security
    from engine.cluster_worker import ClusterRequest, usable_cores

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


def cmd_analyse(args: argparse.Namespace, cancel: threading.Event) -> int:
    from engine.batch import unique_jobs

    jobs = unique_jobs(args.slides)
    return _run(args, jobs, resume=False, cancel=cancel)


def cmd_batch(args: argparse.Namespace, cancel: threading.Event) -> int:
    from engine.batch import discover_slides, holds
    from engine.errors import SlideNotFoundError

    # every slide would be skipped as being in the output folder; a missing folder is exit 4 below
    if args.folder.is_dir() and holds(args.out, args.folder):
        say_error(f"--out {args.out}: the slide folder {args.folder} is in it; choose another --out")
        return EXIT_USAGE
    try:
        jobs = discover_slides(args.folder, args.recursive, exclude=args.out)
    except SlideNotFoundError as exc:
        say_error(exc.message(remedies_for(args.command)))
        return EXIT_NOTHING
    if not jobs:
        say_error(f"no slides found in {args.folder}" + ("" if args.recursive else " (try --recursive)"))
        return EXIT_NOTHING
    log.info("%d slides in %s", len(jobs), args.folder)
    return _run(args, jobs, resume=True, cancel=cancel)


def cmd_info(args: argparse.Namespace, cancel: threading.Event) -> int:
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


def cmd_model(args: argparse.Namespace, cancel: threading.Event) -> int:
    from engine.model import Model

    model = Model.load(args.model, threads=1)
    contract = json.loads(model.contract.to_json())
    card_path = model.path.with_name("MODEL_CARD.md")
    facts = {"path": str(model.path), "sha256": model.sha256, **contract}
    if args.json:
        _out(json.dumps(facts, indent=2, ensure_ascii=False))
        return EXIT_OK
    _print_facts(facts, skip=set())
    try:
        card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    except (OSError, UnicodeError) as exc:  # the facts are out; a damaged card is only noted
        log.warning("%s: cannot be read (%s)", card_path, exc)
        card = ""
    if card:
        _out("\n" + card)
    return EXIT_OK


def _print_facts(facts: dict[str, Any], skip: set[str], write: Callable[[str], None] = _out) -> None:
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if key not in skip:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            write(f"{key.ljust(width)}  {text}")
