"""Slides per minute of the local batch and of a local Dask cluster of 1 and 2 workers, and a
projection to a large archive on several machines.

Copies of one slide (default: the demo slide, a mosaic of real PCam patches, with the shipped
model) are analysed into a fresh output folder by each mode in turn, ``--reps`` times, alternating
modes so background load hits them alike; the median batch time counts. Cluster start-up is timed
apart (it is paid once per batch, not per slide).

- ``local``: ``engine.batch.run_batch`` in this process, inference on every core.
- ``1 worker``: a loopback cluster of one worker process, inference on every core.
- ``2 workers``: two worker processes of one slide each, inference on cores / 2 threads each.

    python benchmarks/cluster_batch.py [--slides 12] [--reps 2] [--slide S] [--model M]
        [--archive 5000] [--machines 10] [--tiles-per-slide 15000]

The projection assumes: every machine is like this one (cores, speed) and runs as many workers
as the faster cluster mode here, at its measured rate; slides are read
from a shared filesystem fast enough not to be the bottleneck; the work per slide scales with its
tissue tiles (``--tiles-per-slide``: 15,000 is a whole 40x lymph-node slide, see the README), at
the measured end-to-end tiles per second, with the per-slide overhead of this small slide; the
scheduler and the summary rebuild are negligible beside the analysis.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.batch import discover_slides, run_batch  # noqa: E402
from engine.cluster import local_cluster, run_cluster_batch  # noqa: E402
from engine.cluster_worker import ClusterRequest  # noqa: E402
from engine.model import Model  # noqa: E402
from engine.pipeline import AnalysisParams  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slides", type=int, default=12, help="copies of the slide in the batch")
    p.add_argument("--reps", type=int, default=2, help="runs of each mode (median counts)")
    p.add_argument("--slide", type=Path, default=REPO / "assets" / "demo_slide.tiff")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--archive", type=int, default=5000, help="slides in the projected archive")
    p.add_argument("--machines", type=int, default=10, help="machines in the projection")
    p.add_argument("--tiles-per-slide", type=int, default=15000, help="tissue tiles of an archive slide")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    return p.parse_args(argv)


def run_mode(mode: str, folder: Path, work: Path, model: Model, params: AnalysisParams) -> dict[str, float]:
    jobs = discover_slides(folder)
    out = Path(tempfile.mkdtemp(dir=work, prefix="out-"))
    cores = os.cpu_count() or 1
    if mode == "local":
        start = time.perf_counter()
        outcomes = run_batch(jobs, out, model, params)
        seconds, startup = time.perf_counter() - start, 0.0
    else:
        workers = 1 if mode == "1 worker" else 2
        t0 = time.perf_counter()
        with local_cluster(workers) as client:
            startup = time.perf_counter() - t0
            request = ClusterRequest.for_model(model, out, params, threads=max(1, cores // workers))
            start = time.perf_counter()
            outcomes = run_cluster_batch(client, jobs, request)
            seconds = time.perf_counter() - start
    ok = [o for o in outcomes if o.status == "ok" and o.summary is not None]
    assert len(ok) == len(jobs), [o.message() for o in outcomes if o.status != "ok"]
    tiles = sum(o.summary.tiles.analysed for o in ok if o.summary is not None)
    shutil.rmtree(out)
    return {"seconds": seconds, "startup_s": startup, "tiles": tiles}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = os.cpu_count() or 1
    model = Model.load(args.model, threads=cores)
    params = AnalysisParams()
    modes = ("local", "1 worker", "2 workers")
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        work = Path(tmp)
        folder = work / "slides"
        folder.mkdir()
        for i in range(args.slides):
            shutil.copy(args.slide, folder / f"slide_{i:03d}{args.slide.suffix}")
        for rep in range(args.reps):
            for mode in modes:
                result = run_mode(mode, folder, work, model, params)
                runs[mode].append(result)
                sys.stderr.write(f"rep {rep + 1} {mode:9s} {result['seconds']:6.1f} s\n")

    rows = {}
    for mode in modes:
        seconds = statistics.median(r["seconds"] for r in runs[mode])
        tiles = runs[mode][0]["tiles"]
        rows[mode] = {
            "batch_s": round(seconds, 2),
            "startup_s": round(statistics.median(r["startup_s"] for r in runs[mode]), 2),
            "slides_per_min": round(args.slides / seconds * 60, 1),
            "s_per_slide": round(seconds / args.slides, 3),
            "tiles_per_s": round(tiles / seconds, 1),
        }
    local_spm = rows["local"]["slides_per_min"]
    for mode in modes:
        rows[mode]["vs_local"] = round(rows[mode]["slides_per_min"] / local_spm, 3)

    best = max(("1 worker", "2 workers"), key=lambda m: rows[m]["slides_per_min"])
    per_slide_s = rows[best]["s_per_slide"]  # one machine, its workers in parallel
    tiles_per_slide_here = runs[best][0]["tiles"] / args.slides
    tiles_rate = rows[best]["tiles_per_s"]
    big_slide_s = per_slide_s + (args.tiles_per_slide - tiles_per_slide_here) / tiles_rate
    fleet = args.machines
    projection = {
        "archive_slides": args.archive,
        "machines": fleet,
        "mode_measured": best,
        "hours_for_slides_like_these": round(args.archive * per_slide_s / fleet / 3600, 2),
        "tiles_per_archive_slide": args.tiles_per_slide,
        "machine_s_per_archive_slide": round(big_slide_s, 1),
        "hours_for_archive_slides": round(args.archive * big_slide_s / fleet / 3600, 1),
        "slides_per_hour_fleet": round(fleet * 3600 / big_slide_s),
    }
    report = {
        "cores": cores,
        "slides": args.slides,
        "slide": str(args.slide),
        "tiles_per_slide": tiles_per_slide_here,
        "reps": args.reps,
        "modes": rows,
        "projection": projection,
    }
    out = sys.stdout.write
    out(f"{args.slides} copies of {args.slide.name} ({tiles_per_slide_here:.0f} tissue tiles), ")
    out(f"{cores} cores\n")
    out(f"{'mode':10s} {'slides/min':>10s} {'x local':>8s} {'s/slide':>8s} {'tiles/s':>8s} {'start s':>8s}\n")
    for mode, r in rows.items():
        out(
            f"{mode:10s} {r['slides_per_min']:10.1f} {r['vs_local']:8.3f} {r['s_per_slide']:8.2f} "
            f"{r['tiles_per_s']:8.1f} {r['startup_s']:8.1f}\n"
        )
    out(json.dumps(projection, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
