"""Command line: ``python -m training {train,fork,export,evaluate,quantize,study,results,summary}``.

Also installed as ``equitriage-train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.errors import CheckpointError

DEFAULT_DATA = "../shared/data/pcam/pcam_train_valid.zip"
DEFAULT_CACHE_DIR = "runs/cache"


def _strides(text: str) -> tuple[bool, ...]:
    if len(text) != 5 or set(text) - {"0", "1"}:
        raise argparse.ArgumentTypeError("strides is five 0/1 flags, e.g. 11100")
    return tuple(c == "1" for c in text)


def _group(text: str) -> int:
    if not text.upper().startswith("C") or not text[1:].isdigit():
        raise argparse.ArgumentTypeError("group is C<N>, e.g. C8")
    return int(text[1:])


def _processes(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("processes is a whole number, 1 or more")
    return int(text)


def _add_arch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=["conventional", "equivariant"], default="equivariant")
    p.add_argument("--group", type=_group, default=8, help="rotation group C4, C8 or C12")
    p.add_argument("--width", type=float, default=0.5, help="width multiplier")
    p.add_argument(
        "--strides",
        type=_strides,
        default=(True, True, True, False, False),
        help="which of the five stride-2 layers keep stride 2 (default 11100, paper)",
    )
    p.add_argument(
        "--scale-last", action="store_true", help="scale the last 1x1 conv (1280) by the width below 1.0 too"
    )
    p.add_argument(
        "--antialias", action="store_true", help="blur before every stride-2 subsampling (shift stability)"
    )
    p.add_argument(
        "--blur-kernel", type=int, choices=(3, 5, 7), default=3, help="binomial size of that blur (default 3)"
    )
    p.add_argument(
        "--expansion", type=int, default=6, help="inverted-residual expansion ratio (default 6, MobileNetV2)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on PCam")
    _add_arch(t)
    t.add_argument("--data", default=DEFAULT_DATA, help="PCam zip, h5 folder or Kaggle folder")
    t.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    t.add_argument("--out", default=None, help="run folder (default runs/<arch>-<group>-w<width>-s<seed>)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--train-size", type=int, default=None, help="train on a stratified subset")
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default all cores)")
    t.add_argument(
        "--processes",
        type=_processes,
        default=None,
        help="data-parallel processes, each stepping on a share of every batch with THREADS/N "
        "threads (default 1; 2 on 2 cores trains faster: docs/results.md)",
    )
    t.add_argument("--rotate-deg", type=float, default=0.0, help="random rotations of +-deg")
    t.add_argument("--jitter", type=float, default=None, help="colour jitter strength (0 = off)")
    t.add_argument(
        "--recipe",
        choices=["plain", "robust"],
        default="plain",
        help="robust: shift, scale, blur, JPEG and stain augmentation, label smoothing, weight EMA",
    )
    t.add_argument(
        "--shift",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop the field of view at a random position of the patch",
    )
    t.add_argument("--scale", type=float, default=None, help="zoom jitter of up to 1 +- SCALE")
    t.add_argument("--blur-p", type=float, default=None, help="probability of a Gaussian blur")
    t.add_argument("--seam-p", type=float, default=None, help="probability of a same-label 4-patch composite")
    t.add_argument("--jpeg-p", type=float, default=None, help="probability of JPEG re-encoding")
    t.add_argument("--hed", type=float, default=None, help="HED stain jitter strength")
    t.add_argument("--label-smoothing", type=float, default=None)
    t.add_argument("--ema-decay", type=float, default=None, help="average the weights (e.g. 0.999)")
    t.add_argument("--max-steps-per-epoch", type=int, default=None)
    t.add_argument(
        "--bf16",
        action="store_true",
        help="forward pass in bfloat16 autocast where the CPU has it natively (AVX512-BF16 or AMX; "
        "float32 elsewhere, where emulated bfloat16 is several times slower)",
    )
    t.add_argument(
        "--consistency",
        type=float,
        default=0.0,
        help="weight of a one-pixel-shift consistency term: each patch is seen twice, one pixel "
        "apart, and the two answers' Jensen-Shannon divergence is penalised (e.g. 10-40)",
    )
    t.add_argument(
        "--consistency-target",
        choices=("mutual", "anchored", "teacher"),
        default="mutual",
        help="mutual: both answers move toward each other; anchored: the first view's answer is a "
        "fixed target for the second (KL divergence, no gradient through the first); teacher: both "
        "views move toward a frozen teacher's answer averaged over the two views (needs --teacher)",
    )
    t.add_argument(
        "--teacher", default=None, help="checkpoint of the frozen teacher (--consistency-target teacher)"
    )
    t.add_argument(
        "--init", default=None, help="start from this checkpoint's weights (same architecture): fine-tuning"
    )
    t.add_argument(
        "--negative-focus",
        type=float,
        default=0.0,
        help="weight normal patches by 1 + F * p^2 (p: the model's tumour probability), so confident "
        "false positives count more (e.g. 4-16; default 0: off)",
    )
    t.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    t.add_argument(
        "--stop-after", type=int, default=None, help="stop after this many epochs in this call (resume later)"
    )

    f = sub.add_parser(
        "fork", help="continue a run's last.pt in a new folder with another blur or seam setting"
    )
    f.add_argument("src", help="run folder holding last.pt")
    f.add_argument("dst", help="new run folder (then: train --out DST --resume)")
    f.add_argument("--blur-kernel", type=int, choices=(3, 5, 7), default=None, help="another blur size")
    f.add_argument("--seam-p", type=float, default=None, help="another seam-composite probability")

    e = sub.add_parser("export", help="export a checkpoint to ONNX with the engine's contract")
    e.add_argument("checkpoint")
    e.add_argument("--out", default="model.onnx")
    e.add_argument("--metrics", default=None, help="JSON of held-out metrics to store in info")
    e.add_argument("--data", default=DEFAULT_DATA, help="real patches for the parity check")
    e.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)

    v = sub.add_parser("evaluate", help="held-out metrics, invariance and stability of an ONNX model")
    v.add_argument("model")
    v.add_argument("--data", default=DEFAULT_DATA)
    v.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    v.add_argument("--out-dir", default=None, help="where to write metrics.json and the plot")
    v.add_argument("--limit", type=int, default=None, help="use only the first N held-out patches")
    v.add_argument("--curve-patches", type=int, default=200)
    v.add_argument("--n-boot", type=int, default=1000)
    v.add_argument("--train-patches", type=int, default=1000, help="training patches to score too (0: none)")
    v.add_argument("--stamp", action="store_true", help="record the held-out numbers in the model's contract")

    s = sub.add_parser("summary", help="parameters and MACs per patch of both architectures")
    _add_arch(s)

    add_quantize_parser(sub)
    add_study_parser(sub)
    add_results_parser(sub)
    return parser


def add_quantize_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``quantize`` to ``python -m training``'s subcommands."""
    from training.quantize import MAX_CALIBRATION, QuantConfig

    q: argparse.ArgumentParser = subparsers.add_parser(
        "quantize",
        help="INT8 ONNX model from a training checkpoint (data-free quantization, Nagel et al. 2019)",
        description="Quantize a training CHECKPOINT (.pt, not an .onnx file: cross-layer "
        "equalization and high-bias absorption need its batch-norm statistics) to an "
        "onnxruntime QDQ INT8 model carrying the engine's contract.",
    )
    q.add_argument("checkpoint", help="training checkpoint (.pt), e.g. runs/<run>/best.pt")
    q.add_argument("--out", default="model_int8.onnx")
    q.add_argument("--fp32-out", default=None, help="also write the DFQ'd FP32 twin here")
    q.add_argument("--no-cle", action="store_true", help="skip cross-layer equalization")
    q.add_argument("--no-hba", action="store_true", help="skip high-bias absorption")
    q.add_argument("--bias-correction", action="store_true", help="analytic bias correction")
    q.add_argument("--per-channel", action="store_true", help="per-channel weights (default per-tensor)")
    q.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help=f"calibrate activation ranges on N <= {MAX_CALIBRATION} training patches "
        "(default 0: data-free ranges from batch-norm statistics)",
    )
    q.add_argument(
        "--range-sigmas",
        type=float,
        default=QuantConfig.range_sigmas,
        help="data-free activation range: BN mean +- this many BN stds",
    )
    q.add_argument("--no-reduce-range", action="store_true", help="8-bit instead of 7-bit weights")
    q.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="PCam data for --calibrate and the INT8-vs-FP32 check ('' for none)",
    )
    q.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    return q


def add_study_parser(subparsers: Any) -> None:
    """Add ``study`` to ``python -m training``'s subcommands."""
    from training.study import VARIANT_BY_NAME

    p = subparsers.add_parser("study", help="export, quantize and evaluate trained runs (docs/results.md)")
    p.add_argument("runs", nargs="+", help="run folders, each with a best.pt")
    p.add_argument("--out", default="runs/study")
    p.add_argument("--variants", default="", help=f"comma-separated subset of {', '.join(VARIANT_BY_NAME)}")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR)
    p.add_argument(
        "--curve-patches",
        type=int,
        default=100,
        help="held-out patches for the continuous-angle curve (0 skips it)",
    )
    p.add_argument("--n-boot", type=int, default=1000)


def add_results_parser(subparsers: Any) -> None:
    """Add ``results`` to ``python -m training``'s subcommands."""
    p = subparsers.add_parser("results", help="tables and plots of docs/results.md from a study folder")
    p.add_argument("study", help="folder written by 'python -m training study'")
    p.add_argument("--doc", default="docs/results.md")
    p.add_argument("--figures", default="docs/results")
    p.add_argument("--speed", default=None, help="JSON written by benchmarks/model_speed.py --json")
    p.add_argument(
        "--recipe",
        nargs=2,
        metavar=("STUDY", "SPEED"),
        default=None,
        help="study folder and speed JSON of the recipe comparison (the recipe block)",
    )


def _arch(args: argparse.Namespace) -> object:
    from training.config import ArchConfig

    return ArchConfig(
        arch=args.arch,
        group_order=args.group,
        width=args.width,
        strides=args.strides,
        scale_last=args.scale_last,
        antialias=args.antialias,
        blur_kernel=args.blur_kernel,
        expansion=args.expansion,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    if args.command in ("train", "fork"):  # the commands that train
        from training.allocator import keep_freed_memory

        keep_freed_memory()
    try:
        return _command(args)
    except CheckpointError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 2
    except KeyboardInterrupt:
        resume = "; finished epochs are saved: `train --resume --out RUN` continues the run"
        logging.getLogger(__name__).warning("interrupted%s", resume if args.command == "train" else "")
        return 130


def _command(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit status."""
    if args.command == "train":
        from training.config import ArchConfig
        from training.train import ROBUST_RECIPE, TrainConfig, already_a_run, saved_run, train

        arch = _arch(args)
        assert isinstance(arch, ArchConfig)
        out = args.out or f"runs/{arch.arch}-{arch.group_name}-w{arch.width}-s{args.seed}"
        if not args.resume and (Path(out) / "last.pt").is_file():
            sys.stderr.write(f"python -m training train: error: {already_a_run(out)}\n")
            return 2
        saved = saved_run(Path(out)) if args.resume else None
        if saved is not None:  # a resumed run continues with the settings it was started with,
            cfg, arch = saved  # in the folder it was found in (it may have been moved)
            if args.processes and args.processes != cfg.processes:
                logging.getLogger(__name__).warning(
                    "resuming with --processes %d, not the %d the run started with: its augmentation "
                    "draws and batch-norm batches change, so it will not repeat an uninterrupted run",
                    args.processes,
                    cfg.processes,
                )
            cfg = dataclasses.replace(
                cfg, threads=args.threads, processes=args.processes or cfg.processes, out_dir=out
            )
        else:
            recipe: dict[str, Any] = dict(ROBUST_RECIPE) if args.recipe == "robust" else {}
            options = (
                "shift",
                "scale",
                "blur_p",
                "jpeg_p",
                "hed",
                "jitter",
                "label_smoothing",
                "ema_decay",
                "seam_p",
            )
            for key in options:
                if getattr(args, key) is not None:
                    recipe[key] = getattr(args, key)
            cfg = TrainConfig(
                data=args.data,
                out_dir=out,
                cache_dir=args.cache_dir,
                epochs=args.epochs,
                batch_size=args.batch_size,
                optimizer=args.optimizer,
                lr=args.lr,
                weight_decay=args.weight_decay,
                seed=args.seed,
                train_size=args.train_size,
                threads=args.threads,
                processes=args.processes or 1,
                rotate_deg=args.rotate_deg,
                max_steps_per_epoch=args.max_steps_per_epoch,
                bf16=args.bf16,
                consistency=args.consistency,
                consistency_target=args.consistency_target,
                init=args.init,
                teacher=args.teacher,
                negative_focus=args.negative_focus,
                **recipe,
            )
        train(cfg, arch, resume=args.resume, stop_after=args.stop_after)
        return 0
    if args.command == "export":
        from training.export import export_checkpoint

        export_checkpoint(
            Path(args.checkpoint),
            Path(args.out),
            args.metrics and Path(args.metrics),
            Path(args.data),
            Path(args.cache_dir),
        )
        return 0
    if args.command == "evaluate":
        from training.evaluate import evaluate_onnx

        evaluate_onnx(
            Path(args.model),
            Path(args.data),
            Path(args.cache_dir),
            Path(args.out_dir) if args.out_dir else None,
            args.limit,
            args.curve_patches,
            args.n_boot,
            train_patches=args.train_patches,
            stamp=args.stamp,
        )
        return 0
    if args.command == "quantize":
        from training.commands import cmd_quantize

        return cmd_quantize(args)
    if args.command == "study":
        from training.commands import cmd_study

        return cmd_study(args)
    if args.command == "results":
        from training.commands import cmd_results

        return cmd_results(args)
    if args.command == "fork":
        from training.fork import fork_run

        try:
            fork_run(Path(args.src), Path(args.dst), args.blur_kernel, args.seam_p)
        except FileExistsError as exc:  # it would overwrite the run there
            sys.stderr.write(f"python -m training fork: error: {exc}\n")
            return 2
        return 0
    if args.command == "summary":
        from training.complexity import log_summary
        from training.config import ArchConfig

        summary_arch = _arch(args)
        assert isinstance(summary_arch, ArchConfig)
        log_summary(summary_arch)
        return 0
    return 2
