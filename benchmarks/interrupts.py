"""Interrupt ``equitriage-engine analyse`` at random moments and count how each run ended.

Each try starts a fresh process on a large slide, sends SIGINT or SIGTERM (alternately) after a
random delay between 0 and the median time of three uninterrupted runs, and classifies the end:

- ``clean``: exit 130 (SIGINT) or 143 (SIGTERM), one "interrupted" line, no traceback;
- ``finished``: exit 0, the process had ended before the signal came;
- ``startup``: ended by the signal's default action (-2/-15): it came while the interpreter was
  starting, before ``engine.launch`` installed its handlers, when nothing is open yet;
- ``crash``: anything else (OpenSlide assertion 134, segfault 139, killed by another signal, a
  traceback, another exit status).

Every try also checks the output folder: a ``summary.json`` there must be whole, with every file
it lists. The goal is 0 crashes.

    python benchmarks/interrupts.py [--tries 100] [--slide S] [--model M] [--stride PX] [--seed N]

Without ``--slide`` a 12,000 x 12,000 px JPEG-tiled pyramid (0.25 µm/px) is written to a temp
folder first (about a second).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=100)
    p.add_argument("--slide", type=Path, help="slide to analyse (default: build one)")
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped one)")
    p.add_argument("--stride", type=int, default=40, help="tile stride in model px (smaller: longer run)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def command(slide: Path, out: Path, model: Path | None, stride: int) -> list[str]:
    cmd = [sys.executable, "-m", "engine", "analyse", str(slide), "--out", str(out), "--stride", str(stride)]
    cmd += ["--threads", "1", "-q"]
    return cmd + (["--model", str(model)] if model else [])


def whole(out: Path) -> bool:
    """Every summary.json in ``out`` parses and every file it lists is there."""
    for summary in out.glob("*/summary.json"):
        try:
            data = json.loads(summary.read_text())
        except ValueError:
            return False
        if not all((summary.parent / name).is_file() for name in data.get("outputs", [])):
            return False
    return True


def one_try(cmd: list[str], out: Path, delay_s: float, sig: signal.Signals) -> tuple[str, str]:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay_s)
    proc.send_signal(sig)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return "crash", "hung for 120 s after the signal"
    rc = proc.returncode
    detail = f"rc {rc}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"
    if not whole(out):
        return "crash", "a summary.json without its files: " + detail
    if "Traceback" in stderr:
        return "crash", detail
    if rc == 0:
        return "finished", detail
    if rc == 128 + sig:
        return "clean", detail
    if rc == -sig:
        return "startup", detail
    return "crash", detail


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="equitriage-interrupts-") as tmp:
        root = Path(tmp)
        slide = args.slide
        if slide is None:
            from tests.slide_files import write_pyramid_tiff

            slide = write_pyramid_tiff(root / "large.tiff", 12000, 12000)
        times = []
        for i in range(3):
            t0 = time.perf_counter()
            cmd = command(slide, root / f"full{i}", args.model, args.stride)
            full = subprocess.run(cmd, cwd=REPO, check=False, capture_output=True)
            times.append(time.perf_counter() - t0)
            if full.returncode != 0:
                sys.stderr.write(f"the uninterrupted run failed (exit {full.returncode})\n")
                return 1
        run_s = sorted(times)[1]
        sys.stdout.write(f"uninterrupted run: {run_s:.1f} s (median of 3); {args.tries} tries\n")
        counts: collections.Counter[str] = collections.Counter()
        by_signal: collections.Counter[tuple[str, str]] = collections.Counter()
        crashes: list[str] = []
        for i in range(args.tries):
            sig = signal.SIGINT if i % 2 == 0 else signal.SIGTERM
            delay = rng.uniform(0.0, run_s)
            out = root / f"out{i}"
            outcome, detail = one_try(command(slide, out, args.model, args.stride), out, delay, sig)
            counts[outcome] += 1
            by_signal[(sig.name, outcome)] += 1
            if outcome == "crash":
                crashes.append(f"try {i} ({sig.name} after {delay:.2f} s): {detail}")
        sys.stdout.write(
            " ".join(f"{k}={counts[k]}" for k in ("clean", "finished", "startup", "crash"))
            + "  ("
            + ", ".join(f"{s} {o}: {n}" for (s, o), n in sorted(by_signal.items()))
            + ")\n"
        )
        for line in crashes:
            sys.stdout.write(line + "\n")
    return 1 if counts["crash"] else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
