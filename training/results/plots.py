"""The figures of ``docs/results.md`` (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from training.results.records import Record, arch_label, archs, full_size, mean_std, select
from training.study import SHIPPED_VARIANT, VARIANTS


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rotation(
    records: list[Record], path: Path, variants: tuple[str, ...] = ("fp32", "int8-naive", SHIPPED_VARIANT)
) -> None:
    """Mean |Δp| against input rotation, one panel per architecture, mean over seeds."""
    plt = _pyplot()
    n = full_size(records)
    arch_list = archs(records)
    fig, axes = plt.subplots(
        1, len(arch_list), figsize=(5.5 * len(arch_list), 3.6), dpi=120, sharey=True, squeeze=False
    )
    labels = {v.name: v.label for v in VARIANTS}
    for ax, arch in zip(axes[0], arch_list, strict=True):
        for variant in variants:
            curves = [
                r.metrics["rotation_curve"]
                for r in select(records, arch=arch, train_patches=n, variant=variant)
                if r.metrics.get("rotation_curve")
            ]
            if not curves:
                continue
            angles = curves[0]["angles_deg"]
            mean = [statistics.fmean(c["mean_abs_dp"][i] for c in curves) for i in range(len(angles))]
            ax.plot(angles, mean, marker="o", markersize=3, label=f"{labels[variant]} ({len(curves)})")
        ax.set_title(arch_label(records, arch))
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
            sizes = sorted({r.train_patches for r in select(records, arch=arch, variant=variant)})
            for ax, metric in zip(axes, ("accuracy", "auc"), strict=True):
                stats = [
                    mean_std(
                        [
                            getattr(r, metric)
                            for r in select(records, arch=arch, variant=variant, train_patches=n)
                        ]
                    )
                    for n in sizes
                ]
                ax.errorbar(
                    sizes,
                    [m for m, _ in stats],
                    yerr=[s for _, s in stats],
                    color=colour,
                    linestyle=style,
                    marker="o",
                    capsize=3,
                    label=f"{arch} {'FP32' if variant == 'fp32' else 'INT8'}",
                )
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
            rows = select(records, arch=arch, train_patches=n, variant=variant.name)
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
