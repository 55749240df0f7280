"""The quantization study end to end on a tiny checkpoint and real patches, then its document."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch

from tests.training.dfq_models import tiny_arch, tiny_plain
from training.cli import add_results_parser, add_study_parser
from training.commands import cmd_results, cmd_study
from training.study import VARIANT_BY_NAME, parse_variants


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_study_parser(sub)
    add_results_parser(sub)
    return parser.parse_args(argv)


def _checkpoint(run: Path, seed: int) -> None:
    run.mkdir(parents=True)
    torch.save(
        {
            "arch": tiny_arch("conventional").to_dict(),
            "model": tiny_plain("conventional", seed=seed).state_dict(),
            "mean": [0.70, 0.54, 0.69],
            "std": [0.24, 0.28, 0.22],
            "epoch": 1,
            "n_train": 400,
            "train_config": {"seed": seed, "epochs": 2, "jitter": 0.5 * seed},
            "history": [
                {"epoch": 1, "patches_per_s": 10.0, "val_loss": 0.6},
                {"epoch": 2, "patches_per_s": 10.0, "val_loss": 0.5 + seed / 100},
            ],
        },
        run / "best.pt",
    )


def test_parse_variants() -> None:
    assert [v.name for v in parse_variants("fp32, int8-dfq")] == ["fp32", "int8-dfq"]
    assert len(parse_variants("")) == len(VARIANT_BY_NAME)
    with pytest.raises(ValueError, match="unknown variant"):
        parse_variants("fp32,int4")


def test_study_then_results(pcam_h5: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (0, 1):
        _checkpoint(runs / f"conv-s{seed}", seed)
    study = tmp_path / "study"
    argv = [
        "study",
        *(str(runs / f"conv-s{s}") for s in (0, 1)),
        "--out",
        str(study),
        "--variants",
        "fp32,int8-dfq-bc",
        "--data",
        str(pcam_h5),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--curve-patches",
        "4",
        "--n-boot",
        "20",
    ]
    assert cmd_study(_parse(argv)) == 0
    metrics = json.loads((study / "conv-s1" / "int8-dfq-bc" / "metrics.json").read_text())
    assert metrics["model_version"].endswith("-int8") and metrics["heldout_patches"] > 100
    assert 0.0 <= metrics["accuracy"]["value"] <= 1.0 and len(metrics["rotation_curve"]["angles_deg"]) == 25
    run = json.loads((study / "conv-s0" / "run.json").read_text())
    assert (run["arch"], run["seed"], run["train_patches"]) == ("conventional", 0, 400)
    run1 = json.loads((study / "conv-s1" / "run.json").read_text())
    assert (run1["jitter"], run1["selection_loss"]) == (0.5, 0.51)

    # a second call finds everything done and re-evaluates nothing
    before = (study / "conv-s0" / "fp32" / "metrics.json").stat().st_mtime_ns
    assert cmd_study(_parse(argv)) == 0
    assert (study / "conv-s0" / "fp32" / "metrics.json").stat().st_mtime_ns == before

    doc = tmp_path / "results.md"
    doc.write_text(
        "# Results\n"
        + "".join(
            f"<!-- results:{b} -->\n<!-- /results:{b} -->\n" for b in ("main", "ablation", "data-efficiency")
        )
        + "end\n"
    )
    figures = tmp_path / "figures"
    assert cmd_results(_parse(["results", str(study), "--doc", str(doc), "--figures", str(figures)])) == 0
    text = doc.read_text()
    accs = [
        json.loads((study / f"conv-s{s}" / "fp32" / "metrics.json").read_text())["accuracy"]["value"]
        for s in (0, 1)
    ]
    assert f"{100 * sum(accs) / 2:.1f} ± " in text and text.endswith("end\n")
    assert {p.name for p in figures.iterdir()} == {
        "rotation_curves.png",
        "data_efficiency.png",
        "quantization_ablation.png",
    }

    # the recipe block: the same runs side by side, speed matched by model version
    speed = tmp_path / "speed.json"
    speed.write_text(
        json.dumps(
            {
                "threads": 2,
                "batch": 8,
                "repeats": 3,
                "models": [{"version": metrics["model_version"], "macs": 5e6, "patches_per_s": 123.0}],
            }
        )
    )
    doc.write_text(text + "<!-- results:recipe -->\n<!-- /results:recipe -->\n")
    assert (
        cmd_results(
            _parse(
                [
                    "results",
                    str(study),
                    "--doc",
                    str(doc),
                    "--figures",
                    str(figures),
                    "--recipe",
                    str(study),
                    str(speed),
                ]
            )
        )
        == 0
    )
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| conv-s")]
    assert rows[0].startswith("| conv-s0 | conventional | 0.25 | 0 | 2 | – | – | 0.500 |")
    assert rows[1].startswith("| conv-s1 | conventional | 0.25 | 0.5 | 2 | 5 | 123 | 0.510 |")


def test_bad_inputs_are_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert cmd_study(_parse(["study", str(tmp_path), "--data", str(tmp_path)])) == 2
        assert cmd_study(_parse(["study", str(tmp_path), "--variants", "int4"])) == 2
        assert cmd_results(_parse(["results", str(tmp_path), "--doc", str(tmp_path / "no.md")])) == 2
    assert len(caplog.records) == 3
    assert "best.pt" in caplog.records[0].getMessage()
