"""The Markdown tables of ``docs/results.md``: every number from the study's records."""

from __future__ import annotations

from typing import Any

from training.results.records import Record, arch_label, archs, full_size, mean_std, select
from training.study import SHIPPED_VARIANT, VARIANTS

# The paper's PCam test accuracy (Mohamed et al. 2020, Table 1): reference only, never measured here.
PAPER_ACCURACY = {"conventional": (84.67, 84.32), "equivariant": (89.19, 88.94)}


def fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """'mean ± std' of ``values * scale`` (just the value for one)."""
    if not values:
        return "–"
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _fp32_int8_cells(records: list[Record], arch: str, n: int) -> tuple[int, str]:
    """(FP32 runs, '| FP32 acc | INT8 acc | FP32 AUC | INT8 AUC') of ``arch`` trained on ``n`` patches."""
    fp = select(records, arch=arch, train_patches=n, variant="fp32")
    q = select(records, arch=arch, train_patches=n, variant=SHIPPED_VARIANT)
    return len(fp), (
        f"| {fmt([r.accuracy for r in fp], 100)} | {fmt([r.accuracy for r in q], 100)} "
        f"| {fmt([r.auc for r in fp], 1, 3)} | {fmt([r.auc for r in q], 1, 3)}"
    )


def table_main(records: list[Record]) -> str:
    """The paper's Table 1 on our data: FP32 and INT8 accuracy and AUC, mean ± std over seeds."""
    n = full_size(records)
    lines = [
        "| model | seeds | FP32 accuracy % | INT8 accuracy % | FP32 AUC | INT8 AUC "
        "| paper FP32 / INT8 accuracy % |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in archs(records):
        runs, cells = _fp32_int8_cells(records, arch, n)
        paper = PAPER_ACCURACY[arch]
        lines.append(f"| {arch_label(records, arch)} | {runs} {cells} | {paper[0]:.2f} / {paper[1]:.2f} |")
    return "\n".join(lines)


def _paired_delta(records: list[Record], arch: str, n: int, variant: str) -> list[float]:
    """Accuracy of ``variant`` minus FP32, per run (points)."""
    fp = {r.run: r.accuracy for r in select(records, arch=arch, train_patches=n, variant="fp32")}
    return [
        100 * (r.accuracy - fp[r.run])
        for r in select(records, arch=arch, train_patches=n, variant=variant)
        if r.run in fp
    ]


def table_ablation(records: list[Record]) -> str:
    """Quantization ablation per architecture: accuracy, AUC, change vs FP32, rotation figures."""
    n = full_size(records)
    lines = [
        "| model | variant | runs | accuracy % | Δ vs FP32 (points) | AUC | rot90 max \\|Δp\\| "
        "| mean \\|Δp\\| off 90° |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch in archs(records):
        for variant in VARIANTS:
            rows = select(records, arch=arch, train_patches=n, variant=variant.name)
            if not rows:
                continue
            delta = _paired_delta(records, arch, n, variant.name) if variant.name != "fp32" else []
            off = [v for v in (r.off_axis_dp() for r in rows) if v is not None]
            lines.append(
                f"| {arch} | {variant.label} | {len(rows)} | {fmt([r.accuracy for r in rows], 100)} "
                f"| {fmt(delta, 1, 2) if delta else '–'} | {fmt([r.auc for r in rows], 1, 3)} "
                f"| {max(r.rot90 for r in rows):.2g} | {fmt(off, 1, 4)} |"
            )
    return "\n".join(lines)


def table_data_efficiency(records: list[Record]) -> str:
    """Accuracy and AUC by training-set size, FP32 and INT8."""
    sizes = sorted({r.train_patches for r in records})
    lines = [
        "| model | training patches | runs | FP32 accuracy % | INT8 accuracy % | FP32 AUC | INT8 AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in archs(records):
        for n in sizes:
            runs, cells = _fp32_int8_cells(records, arch, n)
            if runs:
                lines.append(f"| {arch} | {n:,} | {runs} {cells} |")
    return "\n".join(lines)


def table_speed(speed: dict[str, Any]) -> str:
    """benchmarks/model_speed.py's JSON as a table."""
    lines = [
        f"{speed['threads']} threads, batch {speed['batch']}, median of {speed['repeats']} "
        "interleaved repeats.",
        "",
        "| model | precision | MMACs/patch | parameters (graph) | file MB | patches/s | vs FP32 |",
        "|---|---|---|---|---|---|---|",
    ]
    fp32_speed: dict[str, float] = {}
    for row in speed["models"]:
        arch = row["version"].split("-")[0]
        if row["precision"] == "fp32":
            fp32_speed[arch] = row["patches_per_s"]
        base = fp32_speed.get(arch)
        ratio = f"{row['patches_per_s'] / base:.2f}x" if base else "–"
        macs = f"{row['macs'] / 1e6:.1f}" if row.get("macs") else "–"
        lines.append(
            f"| {arch} | {row['precision']} | {macs} | {row['params']:,} "
            f"| {row['file_bytes'] / 1e6:.2f} | {row['patches_per_s']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def table_recipe(records: list[Record], speed: dict[str, Any]) -> str:
    """One row per run: model, width, colour jitter, epochs; cost, selection loss, held-out scores.

    MACs and INT8 patches/s come from ``speed`` (benchmarks/model_speed.py), matched by model version.
    """
    by_version = {row["version"]: row for row in speed["models"]}
    lines = [
        f"Speed: INT8, {speed['threads']} threads, batch {speed['batch']}, median of "
        f"{speed['repeats']} interleaved repeats.",
        "",
        "| run | model | width | colour jitter | epochs | MMACs/patch | INT8 patches/s | selection loss "
        "| FP32 accuracy % | INT8 accuracy % | INT8 AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_run: dict[str, list[Record]] = {}
    for record in records:
        by_run.setdefault(record.run, []).append(record)
    for rows in sorted(
        by_run.values(),
        key=lambda rows: (rows[0].arch, rows[0].width, rows[0].jitter, rows[0].epochs or 0, rows[0].run),
    ):
        first = rows[0]  # run-level fields are the same for every variant of a run
        fp = [r for r in rows if r.variant == "fp32"]
        q = [r for r in rows if r.variant == SHIPPED_VARIANT]
        timed = by_version.get(q[0].metrics.get("model_version", "")) if q else None
        macs = f"{timed['macs'] / 1e6:.0f}" if timed and timed.get("macs") else "–"
        rate = f"{timed['patches_per_s']:.0f}" if timed else "–"
        loss = f"{first.selection_loss:.3f}" if first.selection_loss is not None else "–"
        lines.append(
            f"| {first.run} | {first.arch} | {first.width:g} | {first.jitter:g} | {first.epochs or '–'} "
            f"| {macs} | {rate} | {loss} "
            f"| {fmt([r.accuracy for r in fp], 100)} | {fmt([r.accuracy for r in q], 100)} "
            f"| {fmt([r.auc for r in q], 1, 3)} |"
        )
    return "\n".join(lines)
