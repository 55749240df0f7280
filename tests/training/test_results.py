"""docs/results.md generation: statistics, tables, document blocks and plots from study records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.results.document import fill_blocks
from training.results.plots import plot_ablation, plot_data_efficiency, plot_rotation
from training.results.records import Record, load_study, mean_std
from training.results.tables import (
    fmt,
    table_ablation,
    table_data_efficiency,
    table_main,
    table_recipe,
    table_speed,
)


def _metrics(acc: float, auc: float, rot90: float = 0.0, curve: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"accuracy": {"value": acc}, "auc": {"value": auc}, "rot90_max_abs_dp": rot90}
    if curve is not None:
        out["rotation_curve"] = {"angles_deg": [0, 45, 90, 135, 180], "mean_abs_dp": curve}
    return out


def _record(arch: str, seed: int, variant: str, acc: float, auc: float, n: int = 20000, **kw: Any) -> Record:
    return Record(
        run=f"{arch}-s{seed}-n{n}",
        arch=arch,
        group_order=8 if arch == "equivariant" else 1,
        seed=seed,
        train_patches=n,
        variant=variant,
        metrics=_metrics(acc, auc, **kw),
    )


@pytest.fixture()
def records() -> list[Record]:
    out = []
    for seed, (a_fp, a_q) in enumerate([(0.80, 0.79), (0.82, 0.80), (0.84, 0.84)]):
        out.append(_record("equivariant", seed, "fp32", a_fp, 0.90, curve=[0, 0.02, 0, 0.02, 0]))
        out.append(
            _record("equivariant", seed, "int8-dfq-bc", a_q, 0.89, rot90=1e-8, curve=[0, 0.03, 0, 0.03, 0])
        )
        out.append(_record("conventional", seed, "fp32", 0.75, 0.85, rot90=0.4))
    out.append(_record("conventional", 0, "fp32", 0.60, 0.70, n=2000))
    return out


def test_mean_std_and_format() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert fmt([0.8, 0.82, 0.84], 100) == "82.0 ± 2.0"
    assert fmt([0.8734], 1, 3) == "0.873"
    assert fmt([]) == "–"


def test_main_table_uses_only_full_size_runs(records: list[Record]) -> None:
    text = table_main(records)
    rows = {line.split("|")[1].strip().split()[0]: line for line in text.splitlines()[2:]}
    expected = "| 3 | 82.0 ± 2.0 | 81.0 ± 2.6 | 0.900 ± 0.000 | 0.890 ± 0.000 | 89.19 / 88.94 |"
    assert expected in rows["equivariant"]
    # the 2k conventional run (60%) must not pull the 20k mean down
    assert "| 3 | 75.0 ± 0.0 | – |" in rows["conventional"]
    assert "(C8)" in rows["equivariant"]


def test_ablation_reports_paired_delta_and_rotation(records: list[Record]) -> None:
    line = next(x for x in table_ablation(records).splitlines() if "bias corr" in x)
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[0] == "equivariant" and cells[2] == "3"
    assert cells[4] == "-1.00 ± 1.00"  # (-1, -2, 0) points against each run's own FP32
    assert cells[6] == "1e-08"
    assert cells[7] == "0.0300 ± 0.0000"  # off-90 angles only: 45 and 135


def test_data_efficiency_rows_by_size(records: list[Record]) -> None:
    lines = table_data_efficiency(records).splitlines()[2:]
    conventional = [x for x in lines if x.startswith("| conventional")]
    assert [x.split("|")[2].strip() for x in conventional] == ["2,000", "20,000"]
    assert "60.0" in conventional[0]


def test_speed_table_ratio_against_own_fp32() -> None:
    speed = {
        "threads": 2,
        "batch": 64,
        "repeats": 5,
        "models": [
            {
                "version": "equivariant-C8-x",
                "precision": "fp32",
                "macs": 86e6,
                "params": 10,
                "file_bytes": 2_000_000,
                "patches_per_s": 200.0,
            },
            {
                "version": "equivariant-C8-x-int8",
                "precision": "int8",
                "macs": 86e6,
                "params": 10,
                "file_bytes": 500_000,
                "patches_per_s": 300.0,
            },
        ],
    }
    text = table_speed(speed)
    assert "| equivariant | int8 | 86.0 | 10 | 0.50 | 300 | 1.50x |" in text


def test_recipe_table_one_row_per_run_sorted_by_width_with_speed_by_version() -> None:
    def rec(run: str, width: float, variant: str, acc: float, version: str = "") -> Record:
        metrics = {**_metrics(acc, 0.9), "model_version": version}
        return Record(
            run=run,
            arch="equivariant",
            group_order=8,
            seed=1,
            train_patches=20000,
            variant=variant,
            metrics=metrics,
            width=width,
            jitter=0.0,
            epochs=2,
            selection_loss=0.45,
        )

    records = [
        rec("wide", 1.0, "fp32", 0.80),
        rec("wide", 1.0, "int8-dfq-bc", 0.81, "eq-w1-int8"),
        rec("base", 0.5, "fp32", 0.77),
        rec("base", 0.5, "int8-dfq-bc", 0.78, "eq-w05-int8"),
    ]
    speed = {
        "threads": 2,
        "batch": 64,
        "repeats": 5,
        "models": [
            {"version": "eq-w1-int8", "macs": 278e6, "patches_per_s": 210.4},
            {"version": "eq-w05-int8", "macs": 86e6, "patches_per_s": 690.0},
        ],
    }
    rows = table_recipe(records, speed).splitlines()[4:]
    assert rows == [
        "| base | equivariant | 0.5 | 0 | 2 | 86 | 690 | 0.450 | 77.0 | 78.0 | 0.900 |",
        "| wide | equivariant | 1 | 0 | 2 | 278 | 210 | 0.450 | 80.0 | 81.0 | 0.900 |",
    ]


def test_fill_blocks_replaces_only_named_blocks() -> None:
    doc = (
        "prose\n<!-- results:main -->\nold\n<!-- /results:main -->\nmore prose\n"
        "<!-- results:speed -->\nkeep\n<!-- /results:speed -->\n"
    )
    out = fill_blocks(doc, {"main": "| new |"})
    assert "| new |" in out and "old" not in out
    assert "keep" in out and out.startswith("prose\n") and "more prose" in out
    assert fill_blocks(out, {"main": "| new |"}) == out
    with pytest.raises(ValueError, match="results:ablation"):
        fill_blocks(doc, {"ablation": "x"})


def test_load_study_reads_runs_and_variants(tmp_path: Path) -> None:
    run = tmp_path / "eq-s1"
    (run / "fp32").mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps(
            {
                "arch": "equivariant",
                "group_order": 8,
                "seed": 1,
                "train_patches": 5000,
                "width": 0.75,
                "jitter": 1.0,
                "epochs": 8,
                "selection_loss": 0.47,
            }
        )
    )
    (run / "fp32" / "metrics.json").write_text(json.dumps(_metrics(0.8, 0.9)))
    (records,) = load_study(tmp_path)
    assert (records.run, records.seed, records.train_patches, records.variant) == ("eq-s1", 1, 5000, "fp32")
    assert records.accuracy == 0.8
    assert (records.width, records.jitter, records.epochs, records.selection_loss) == (0.75, 1.0, 8, 0.47)
    with pytest.raises(FileNotFoundError, match="training study"):
        load_study(tmp_path / "nothing")


def test_plots_are_written(records: list[Record], tmp_path: Path) -> None:
    for plot in (plot_rotation, plot_data_efficiency, plot_ablation):
        path = tmp_path / f"{plot.__name__}.png"
        plot(records, path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
