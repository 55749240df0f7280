"""Tables and plots of ``docs/results.md`` from a study folder (``python -m training study``).

    python -m training results runs/study --speed runs/study/speed.json \\
        --doc docs/results.md --figures docs/results

The document keeps its prose; only the blocks between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` are regenerated, so every number in them comes from the study folder.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.outputs import write_text_atomic
from training.study import SHIPPED_VARIANT, VARIANTS

log = logging.getLogger(__name__)

# The paper's PCam test accuracy (Mohamed et al. 2020, Table 1): reference only, never measured here.
PAPER_ACCURACY = {"conventional": (84.67, 84.32), "equivariant": (89.19, 88.94)}
ARCH_LABEL = {"conventional": "conventional MobileNetV2", "equivariant": "equivariant MobileNetV2"}


@dataclass(frozen=True)
class Record:
    """One evaluated model: which run, which variant, and its held-out metrics."""

    run: str
    arch: str
    group_order: int
    seed: int
    train_patches: int
    variant: str
    metrics: dict[str, Any]
    width: float = 0.5
    jitter: float = 0.0
    epochs: int | None = None
    selection_loss: float | None = None

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"]["value"])

    @property
    def auc(self) -> float:
        return float(self.metrics["auc"]["value"])

    @property
    def rot90(self) -> float:
        return float(self.metrics["rot90_max_abs_dp"])

    def off_axis_dp(self) -> float | None:
        """Mean |dp| over the curve's angles that are not multiples of 90 degrees (None: no curve)."""
        curve = self.metrics.get("rotation_curve")
        if not curve:
            return None
        values = [v for a, v in zip(curve["angles_deg"], curve["mean_abs_dp"], strict=True) if a % 90]
        return statistics.fmean(values)


def load_study(folder: Path) -> list[Record]:
    """Every ``<run>/<variant>/metrics.json`` under ``folder`` with its ``<run>/run.json``."""
    records = []
    for run_json in sorted(folder.glob("*/run.json")):
        run = json.loads(run_json.read_text())
        for metrics_json in sorted(run_json.parent.glob("*/metrics.json")):
            records.append(Record(
                run=run_json.parent.name, arch=run["arch"], group_order=int(run["group_order"]),
                seed=int(run["seed"]), train_patches=int(run["train_patches"]),
                variant=metrics_json.parent.name, metrics=json.loads(metrics_json.read_text()),
                width=float(run.get("width", 0.5)), jitter=float(run.get("jitter") or 0.0),
                epochs=run.get("epochs"), selection_loss=run.get("selection_loss"),
            ))
    if not records:
        raise FileNotFoundError(f"{folder}: no evaluated runs; run 'python -m training study' first")
    return records


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """'mean ± std' of ``values * scale`` (just the value for one)."""
    if not values:
        return "–"
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _select(records: list[Record], **want: Any) -> list[Record]:
    return [r for r in records if all(getattr(r, k) == v for k, v in want.items())]


def full_size(records: list[Record]) -> int:
    """The largest training-set size in the study (the 'all 20k' runs)."""
    return max(r.train_patches for r in records)


def archs(records: list[Record]) -> list[str]:
    return [a for a in ("conventional", "equivariant") if any(r.arch == a for r in records)]


def _arch_label(records: list[Record], arch: str) -> str:
    groups = sorted({r.group_order for r in records if r.arch == arch})
    suffix = f" (C{'/C'.join(map(str, groups))})" if arch == "equivariant" else ""
    return ARCH_LABEL[arch] + suffix


def _fp32_int8_cells(records: list[Record], arch: str, n: int) -> tuple[int, str]:
    """(FP32 runs, '| FP32 acc | INT8 acc | FP32 AUC | INT8 AUC') of ``arch`` trained on ``n`` patches."""
    fp = _select(records, arch=arch, train_patches=n, variant="fp32")
    q = _select(records, arch=arch, train_patches=n, variant=SHIPPED_VARIANT)
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
        lines.append(f"| {_arch_label(records, arch)} | {runs} {cells} | {paper[0]:.2f} / {paper[1]:.2f} |")
    return "\n".join(lines)


def _paired_delta(records: list[Record], arch: str, n: int, variant: str) -> list[float]:
    """Accuracy of ``variant`` minus FP32, per run (points)."""
    fp = {r.run: r.accuracy for r in _select(records, arch=arch, train_patches=n, variant="fp32")}
    return [100 * (r.accuracy - fp[r.run])
            for r in _select(records, arch=arch, train_patches=n, variant=variant) if r.run in fp]


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
            rows = _select(records, arch=arch, train_patches=n, variant=variant.name)
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
    for rows in sorted(by_run.values(), key=lambda rows: (
            rows[0].arch, rows[0].width, rows[0].jitter, rows[0].epochs or 0, rows[0].run)):
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


BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n).*?(<!-- /results:(?P=name) -->)", re.S)


def fill_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replace the body of every ``<!-- results:NAME -->`` block named in ``blocks``."""
    found = {m.group("name") for m in BLOCK.finditer(text)}
    missing = set(blocks) - found
    if missing:
        raise ValueError(f"the document has no block(s) {sorted(missing)}; add "
                         + ", ".join(f"'<!-- results:{m} -->' ... '<!-- /results:{m} -->'"
                                     for m in sorted(missing)))

    def body(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in blocks:
            return match.group(0)
        return f"{match.group(1)}{blocks[name].rstrip()}\n{match.group(3)}"

    return BLOCK.sub(body, text)


# ----------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rotation(records: list[Record], path: Path,
                  variants: tuple[str, ...] = ("fp32", "int8-naive", SHIPPED_VARIANT)) -> None:
    """Mean |Δp| against input rotation, one panel per architecture, mean over seeds."""
    plt = _pyplot()
    n = full_size(records)
    arch_list = archs(records)
    fig, axes = plt.subplots(1, len(arch_list), figsize=(5.5 * len(arch_list), 3.6), dpi=120,
                             sharey=True, squeeze=False)
    labels = {v.name: v.label for v in VARIANTS}
    for ax, arch in zip(axes[0], arch_list, strict=True):
        for variant in variants:
            curves = [r.metrics["rotation_curve"] for r in
                      _select(records, arch=arch, train_patches=n, variant=variant)
                      if r.metrics.get("rotation_curve")]
            if not curves:
                continue
            angles = curves[0]["angles_deg"]
            mean = [statistics.fmean(c["mean_abs_dp"][i] for c in curves) for i in range(len(angles))]
            ax.plot(angles, mean, marker="o", markersize=3, label=f"{labels[variant]} ({len(curves)})")
        ax.set_title(_arch_label(records, arch))
        ax.set_xlabel("rotation of the input (degrees)")
        ax.set_xticks(range(0, 361, 45))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel("mean |p(rotated) − p(original)|")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_data_efficiency(records: list[Record], path: Path) -> None:
    """Held-out accuracy and AUC against training-set size (log scale), FP32 solid, INT8 dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
    for arch, colour in zip(archs(records), ("tab:blue", "tab:orange"), strict=False):
        for variant, style in (("fp32", "-"), (SHIPPED_VARIANT, "--")):
            sizes = sorted({r.train_patches for r in _select(records, arch=arch, variant=variant)})
            for ax, metric in zip(axes, ("accuracy", "auc"), strict=True):
                stats = [mean_std([getattr(r, metric) for r in
                                   _select(records, arch=arch, variant=variant, train_patches=n)])
                         for n in sizes]
                ax.errorbar(sizes, [m for m, _ in stats], yerr=[s for _, s in stats], color=colour,
                            linestyle=style, marker="o", capsize=3,
                            label=f"{arch} {'FP32' if variant == 'fp32' else 'INT8'}")
    all_sizes = sorted({r.train_patches for r in records})
    for ax, name in zip(axes, ("accuracy", "AUC"), strict=True):
        ax.set_xscale("log")
        ax.set_xticks(all_sizes, labels=[f"{n:,}" for n in all_sizes])
        ax.minorticks_off()
        ax.set_xlabel("training patches")
        ax.set_ylabel(f"held-out {name}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_ablation(records: list[Record], path: Path) -> None:
    """Held-out accuracy of each quantization variant, both architectures, mean ± std over seeds."""
    plt = _pyplot()
    n = full_size(records)
    fig, ax = plt.subplots(figsize=(9, 3.8), dpi=120)
    arch_list = archs(records)
    width = 0.8 / max(len(arch_list), 1)
    for i, arch in enumerate(arch_list):
        xs, means, stds = [], [], []
        for j, variant in enumerate(VARIANTS):
            rows = _select(records, arch=arch, train_patches=n, variant=variant.name)
            if rows:
                m, s = mean_std([100 * r.accuracy for r in rows])
                xs.append(j + (i - (len(arch_list) - 1) / 2) * width)
                means.append(m)
                stds.append(s)
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=arch)
    ax.set_xticks(range(len(VARIANTS)))
    ax.set_xticklabels([v.label for v in VARIANTS], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out accuracy %")
    lows = [100 * r.accuracy for r in records if r.train_patches == n]
    ax.set_ylim(max(0.0, min(lows) - 5), min(100.0, max(lows) + 3))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line


def build_blocks(records: list[Record], speed: dict[str, Any] | None) -> dict[str, str]:
    """Every generated block of the document, by name."""
    blocks = {
        "main": table_main(records),
        "ablation": table_ablation(records),
        "data-efficiency": table_data_efficiency(records),
    }
    if speed is not None:
        blocks["speed"] = table_speed(speed)
    return blocks


def write_results(study: Path, doc: Path, figures: Path, speed_json: Path | None,
                  recipe: tuple[Path, Path] | None = None) -> dict[str, str]:
    """Fill ``doc``'s blocks and write the plots into ``figures``; returns the blocks.

    ``recipe`` is (study folder, speed JSON) of the recipe comparison, for the ``recipe`` block.
    """
    records = load_study(study)
    speed = json.loads(speed_json.read_text()) if speed_json else None
    blocks = build_blocks(records, speed)
    if recipe is not None:
        blocks["recipe"] = table_recipe(load_study(recipe[0]), json.loads(recipe[1].read_text()))
    figures.mkdir(parents=True, exist_ok=True)
    plot_rotation(records, figures / "rotation_curves.png")
    plot_data_efficiency(records, figures / "data_efficiency.png")
    plot_ablation(records, figures / "quantization_ablation.png")
    write_text_atomic(doc, fill_blocks(doc.read_text(encoding="utf-8"), blocks))
    runs = {r.run for r in records}
    log.info("filled %s from %d models in %d runs; plots in %s", doc, len(records), len(runs), figures)
    return blocks


def add_results_parser(subparsers: Any) -> None:
    """Add ``results`` to ``python -m training``'s subcommands."""
    p = subparsers.add_parser("results", help="tables and plots of docs/results.md from a study folder")
    p.add_argument("study", help="folder written by 'python -m training study'")
    p.add_argument("--doc", default="docs/results.md")
    p.add_argument("--figures", default="docs/results")
    p.add_argument("--speed", default=None, help="JSON written by benchmarks/model_speed.py --json")
    p.add_argument("--recipe", nargs=2, metavar=("STUDY", "SPEED"), default=None,
                   help="study folder and speed JSON of the recipe comparison (the recipe block)")


def cmd_results(args: Any) -> int:
    """Run ``results``; 2 with a one-line message on bad input."""
    doc = Path(args.doc)
    if not doc.is_file():
        log.error("%s: no such document; create it with the <!-- results:NAME --> blocks", doc)
        return 2
    speed = Path(args.speed) if args.speed else None
    recipe = (Path(args.recipe[0]), Path(args.recipe[1])) if args.recipe else None
    for json_path in (speed, recipe[1] if recipe else None):
        if json_path is not None and not json_path.is_file():
            log.error("%s: no such file; run benchmarks/model_speed.py --json %s first", json_path, json_path)
            return 2
    try:
        write_results(Path(args.study), doc, Path(args.figures), speed, recipe)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    return 0
