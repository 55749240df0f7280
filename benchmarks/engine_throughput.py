"""Engine throughput and memory: read-only, model-only and end-to-end tiles/s, peak RSS.

    python benchmarks/engine_throughput.py SLIDE [--model M] [--threads N] [--max-tiles K]

Each mode runs in a fresh process so its peak memory is its own. Goal (issue 2): end to end at
least 70% of the model-only rate, and peak memory under 1.5 GB whatever the slide size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.model import Model
from engine.pipeline import AnalysisParams, _read_batches, analyse_slide, plan_tiles
from engine.slide import open_slide

MODES = ("read_only", "model_only", "end_to_end")


def run_mode(args: argparse.Namespace) -> dict[str, float]:
    model = Model.load(args.model, threads=args.threads)
    slide = open_slide(args.slide)
    params = AnalysisParams(batch_size=args.batch_size, read_threads=args.read_threads)
    input_px = model.contract.input_size
    if args.mode == "end_to_end":
        t0 = time.perf_counter()
        result = analyse_slide(slide, model, params)
        return {"tiles": len(result.probs), "seconds": time.perf_counter() - t0}
    plan = plan_tiles(slide, model.contract, params)
    boxes = plan.l0_boxes[: args.max_tiles]
    if args.mode == "read_only":
        t0 = time.perf_counter()
        batches = _read_batches(slide, boxes, plan.level, plan.read_side, input_px, params, None)
        n = sum(len(p) for _, p in batches)
        return {"tiles": n, "seconds": time.perf_counter() - t0}
    patches = np.random.default_rng(0).integers(0, 256, (params.batch_size, input_px, input_px, 3), np.uint8)
    n_batches = max(1, len(boxes) // params.batch_size)
    model.predict(patches)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n_batches):
        model.predict(patches)
    return {"tiles": n_batches * params.batch_size, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Engine throughput and peak memory on one slide.")
    parser.add_argument("slide", type=Path)
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all)")
    parser.add_argument("--read-threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-tiles", type=int, default=4096, help="tiles for the read/model-only modes")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.mode:
        result = run_mode(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    rates: dict[str, float] = {}
    sys.stdout.write(f"slide: {args.slide}\n")
    for mode in MODES:
        proc = subprocess.run(
            [sys.executable, __file__, *argv, "--mode", mode], capture_output=True, text=True, check=True
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rates[mode] = r["tiles"] / r["seconds"]
        sys.stdout.write(
            f"{mode:<11} {int(r['tiles']):>7} tiles {r['seconds']:8.1f} s {rates[mode]:8.1f} tiles/s"
            f"  peak RSS {r['peak_rss_mb']:6.0f} MB\n"
        )
    ratio = rates["end_to_end"] / rates["model_only"]
    sys.stdout.write(f"end-to-end / model-only: {ratio:.0%} (goal >= 70%)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
