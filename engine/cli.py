"""``equitriage-engine`` / ``python -m engine``: triage slides from the command line.

Exit codes: 0 all good; 1 at least one slide failed; 2 usage error; 3 cannot start (model or
output folder); 130 interrupted (re-run the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from engine import __version__
from engine.errors import EquiTriageError, OutputError, Remedy

log = logging.getLogger("engine.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_START, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

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
        epilog="Exit codes: 0 ok, 1 a slide failed, 2 usage, 3 cannot start, 130 interrupted.",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet, args.verbose)
    if hasattr(args, "min_tissue") and not 0 <= args.min_tissue <= 1:
        parser.error("--min-tissue must be between 0 and 1")
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        _error("interrupted; finished slides are kept, re-run the same command to resume")
        return EXIT_INTERRUPTED
    except OutputError as exc:
        _error(exc.message(remedies_for(args.command)))
        return EXIT_START
    except EquiTriageError as exc:
        _error(exc.message(remedies_for(args.command)))
        return EXIT_START if args.command in ("analyse", "analyze", "batch", "model") else EXIT_FAILED


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


def _run(args: argparse.Namespace, jobs: list[Any], resume: bool) -> int:
    from engine.batch import SlideOutcome, ranked, run_batch
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
            log.info("%s: already analysed with this model, skipped", outcome.job.name)
        elif outcome.status == "failed":
            log.warning("%s", outcome.message(remedies))

    outcomes = run_batch(
        jobs if resume else _fresh(jobs, args.out),
        args.out,
        model,
        params,
        mpp=args.mpp,
        default_mpp=args.default_mpp,
        on_start=bar.start,
        on_done=on_done,
        progress=bar.update,
    )
    bar.close()
    _out(_table(ranked(outcomes), remedies))
    failed = sum(o.status == "failed" for o in outcomes)
    _out(
        f"{len(outcomes) - failed} of {len(outcomes)} slides analysed; results in {args.out}",
        sys.stderr if args.quiet else sys.stdout,
    )
    return EXIT_FAILED if failed else EXIT_OK


def _fresh(jobs: list[Any], out: Path) -> list[Any]:
    """`analyse` always recomputes: drop the completion marks of the slides asked for."""
    from engine.outputs import SUMMARY

    for job in jobs:
        (out / job.name / SUMMARY).unlink(missing_ok=True)
    return jobs


class _TileBar:
    """A tqdm bar per slide on a terminal; nothing when piped or quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._name = ""

    def start(self, job: Any) -> None:
        self._name = job.name

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
        s = o.summary or {}
        score = "" if s.get("score") is None else f"{s['score']:.3f}"
        area = "" if not s else f"{s.get('tumour_area_mm2', 0):.2f}"
        note = o.message(remedies) or short_flags(s)  # out of distribution, assumed µm/px
        rows.append((str(i), o.job.name, o.status, score, s.get("category", ""), area, note))
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    return "\n".join(
        "  ".join(cell.ljust(widths[c]) if c < 6 else cell for c, cell in enumerate(r)).rstrip() for r in rows
    )


def cmd_analyse(args: argparse.Namespace) -> int:
    from engine.batch import SlideJob, _unique_names
    from engine.slide import slide_name

    jobs = _unique_names([SlideJob(p, slide_name(p)) for p in args.slides])
    return _run(args, jobs, resume=False)


def cmd_batch(args: argparse.Namespace) -> int:
    from engine.batch import discover_slides

    jobs = discover_slides(args.folder, args.recursive, exclude=args.out)
    if not jobs:
        _error(f"no slides found in {args.folder}" + ("" if args.recursive else " (try --recursive)"))
        return EXIT_FAILED
    log.info("%d slides in %s", len(jobs), args.folder)
    return _run(args, jobs, resume=True)


def cmd_info(args: argparse.Namespace) -> int:
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


def cmd_model(args: argparse.Namespace) -> int:
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
