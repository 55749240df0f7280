"""Speed and size of exported models, measured side by side: MACs, parameters, file size, patches/s.

    python benchmarks/model_speed.py MODEL.onnx [MODEL_int8.onnx ...] [--checkpoint best.pt]
        [--threads 2] [--batch 64] [--repeats 20] [--json out.json]

Every model is loaded through the engine (``engine.model.Model``, the app's own session options)
on ``--threads`` threads. After a warm-up, the models take turns batch by batch, so background load
hits them alike; the median batch time gives patches/s. Parameters are counted from the Conv and
Gemm weights and biases of the graph (through DequantizeLinear for an INT8 model). MACs come from
the model's contract (``info["macs"]``), else from ``--checkpoint`` (needs torch), else are left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.model import Model


def count_parameters(path: Path) -> tuple[int, int]:
    """(parameters, of which stored as 8-bit integers) of the Conv/Gemm weights and biases."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    dequant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    total = int8 = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        for name in node.input[1:]:
            source = dequant.get(name, name)
            if source in inits:
                array = numpy_helper.to_array(inits[source])
                total += array.size
                int8 += array.size if array.dtype.itemsize == 1 else 0
    return total, int8


def checkpoint_macs(checkpoint: Path) -> int:
    """MACs per patch of a checkpoint's plain network (imports torch)."""
    from training.complexity import count_macs
    from training.config import ArchConfig
    from training.export import load_checkpoint, to_plain

    model, ckpt = load_checkpoint(checkpoint)
    return count_macs(to_plain(model), ArchConfig.from_dict(ckpt["arch"]).input_size)


def measure(models: list[Model], batch: int, repeats: int, warmup: int = 3) -> list[list[float]]:
    """Seconds per batch of each model, the models taking turns on the same random input."""
    size = models[0].contract.input_size
    x = np.random.default_rng(0).normal(size=(batch, 3, size, size)).astype(np.float32)
    for model in models:
        for _ in range(warmup):
            model.predict_prepared(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for i, model in enumerate(models):
            t0 = time.perf_counter()
            model.predict_prepared(x)
            times[i].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=None, help="for MACs when no contract has them")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    models = [Model.load(p, threads=args.threads) for p in args.models]
    sizes = {m.contract.input_size for m in models}
    if len(sizes) != 1:
        sys.stderr.write(f"models take different input sizes {sorted(sizes)}; compare like with like\n")
        return 2
    ckpt_macs = checkpoint_macs(args.checkpoint) if args.checkpoint else None
    times = measure(models, args.batch, args.repeats)
    rows: list[dict[str, Any]] = []
    for path, model, t in zip(args.models, models, times, strict=True):
        params, params_int8 = count_parameters(path)
        macs = model.contract.info.get("macs", ckpt_macs)
        quant = model.contract.info.get("quantization", {})
        rows.append(
            {
                "model": str(path),
                "version": model.version,
                "precision": "int8" if quant else "fp32",
                "macs": macs,
                "params": params,
                "params_int8": params_int8,
                "file_bytes": path.stat().st_size,
                "patches_per_s": args.batch / statistics.median(t),
                "patches_per_s_best": args.batch / min(t),
            }
        )
    out = sys.stdout
    out.write(f"{args.threads} threads, batch {args.batch}, {args.repeats} interleaved repeats (median)\n")
    header = ("model", "prec", "MMACs", "params", "MB", "patch/s", "vs 1st")
    out.write("{:<44} {:>5} {:>8} {:>9} {:>6} {:>9} {:>7}\n".format(*header))
    base = rows[0]["patches_per_s"]
    for r in rows:
        macs = f"{r['macs'] / 1e6:.1f}" if r["macs"] else "-"
        out.write(
            f"{Path(r['model']).name[-44:]:<44} {r['precision']:>5} {macs:>8} {r['params']:>9} "
            f"{r['file_bytes'] / 1e6:>6.2f} {r['patches_per_s']:>9.1f} {r['patches_per_s'] / base:>6.2f}x\n"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"threads": args.threads, "batch": args.batch, "repeats": args.repeats, "models": rows},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
