"""Training loop: seeded, checkpointed every epoch, resumable, keeps the lowest-validation-loss weights.

Model selection uses only the selection half of PCam's ``valid`` split; the held-out half is never
looked at here.
"""

from __future__ import annotations

import io
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from numpy.typing import NDArray
from torch import nn

from engine.outputs import write_bytes_atomic
from training import augment, parallel, robustness
from training.batches import channel_stats, make_batch, make_pair_batch
from training.config import ArchConfig
from training.data import Patches, load_patches
from training.ema import WeightEMA
from training.errors import CheckpointError
from training.metrics import accuracy, auc, nll
from training.models import build_model, judged_checkpoint, load_weights
from training.precision import effective_bf16
from training.splits import VALID_SPLIT_SEED, halve, pixel_groups, stratified_subset

log = logging.getLogger(__name__)

PROGRESS_EVERY = 50  # steps between progress lines
SHIFT_CHECK_SIZE = 500  # selection patches whose one-pixel-shift stability each epoch reports,
SHIFT_CHECK_SEED = 0  # the same ones for every run, so that runs compare


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the architecture."""

    data: str
    out_dir: str
    cache_dir: str = "runs/cache"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    train_size: int | None = None
    threads: int | None = None  # all processes together (default: all cores)
    processes: int = 1  # data-parallel training processes sharing each batch (training.parallel)
    rotate_deg: float = 0.0
    jitter: float = 0.0
    shift: bool = False
    scale: float = 0.0
    blur_p: float = 0.0
    jpeg_p: float = 0.0
    hed: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float | None = None
    seam_p: float = 0.0  # same-label 4-patch composites (augment.seam_composites)
    bf16: bool = False  # forward pass and loss under bfloat16 autocast (weights and optimiser fp32)
    consistency: float = 0.0  # weight of the one-pixel-shift consistency term (shift_consistency)
    consistency_target: str = "mutual"  # "mutual": both views move; "anchored": the first is held;
    # "teacher": both views move toward a frozen teacher's answer, averaged over the two views
    init: str | None = None  # checkpoint whose weights a new run starts from (fine-tuning)
    teacher: str | None = None  # checkpoint of the frozen teacher (consistency_target "teacher")
    negative_focus: float = 0.0  # extra weight on confident false positives (negative_focus_weights)
    train_eval_size: int = 1000
    split_seed: int = VALID_SPLIT_SEED
    eval_batch: int = 64  # larger batches evaluate slower on a CPU (activations beyond the cache)
    max_steps_per_epoch: int | None = None

    def augment(self) -> augment.Augment:
        """The per-patch augmentation this run trains with."""
        return augment.Augment(
            shift=self.shift,
            scale=self.scale,
            blur_p=self.blur_p,
            jpeg_p=self.jpeg_p,
            hed=self.hed,
            jitter=self.jitter,
            rotate_deg=self.rotate_deg,
        )


# The robust recipe: what a slide does to a patch (position, scale, focus, compression, stain),
# a little label smoothing and an averaged model. ``--recipe robust`` on the command line.
ROBUST_RECIPE: dict[str, Any] = {
    "shift": True,
    "scale": 0.15,
    "blur_p": 0.3,
    "jpeg_p": 0.5,
    "hed": 0.05,
    "jitter": 0.5,
    "label_smoothing": 0.05,
    "ema_decay": 0.999,
}


@dataclass
class Splits:
    """Train subset, selection half and held-out half of ``valid``, with training statistics."""

    train: Patches
    select: Patches
    heldout: Patches
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    extra: dict[str, Any] = field(default_factory=dict)


def valid_halves(valid: Patches, split_seed: int) -> tuple[Patches, Patches]:
    """(selection half, held-out half) of ``valid``: seeded, stratified, duplicates kept together."""
    first, second = halve(valid.labels, pixel_groups(np.asarray(valid.images)), split_seed)
    return valid.subset(first), valid.subset(second)


def load_splits(cfg: TrainConfig, input_size: int) -> Splits:
    """Read the data and cut it into train subset, selection half and held-out half."""
    data = load_patches(Path(cfg.data), Path(cfg.cache_dir))
    if "train" not in data or "valid" not in data:
        raise ValueError(f"{cfg.data} needs 'train' and 'valid' splits, found {sorted(data)}")
    train = data["train"]
    if cfg.train_size is not None:
        train = train.subset(stratified_subset(train.labels, cfg.train_size, cfg.seed))
    select, heldout = valid_halves(data["valid"], cfg.split_seed)
    mean, std = channel_stats(train.images, input_size)
    return Splits(train, select, heldout, mean, std)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: NDArray[np.uint8],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    size_px: int,
    batch: int = 64,
    device: str = "cpu",
) -> NDArray[np.float64]:
    """Softmax probabilities N x classes in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = make_batch(images[start : start + batch], size_px, mean, std).to(device)
        out.append(torch.softmax(model(x).double(), dim=1).cpu().numpy())
    return np.concatenate(out)


def shift_consistency(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean Jensen-Shannon divergence between the class distributions of two views' logits.

    Symmetric, bounded by log 2, zero only when both views get the same answer; the gradient
    flows through both views (as in AugMix's consistency loss, Hendrycks et al. 2020).
    """
    log_p = torch.log_softmax(first.float(), dim=1)
    log_q = torch.log_softmax(second.float(), dim=1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=1)
    return 0.5 * (kl_pm + kl_qm).mean()


def anchored_consistency(anchor: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_anchor || p_moved), the anchor's answer held fixed (no gradient through it).

    The moved view learns the anchor's answer while the anchor keeps only the classification
    loss's gradient: the term does not pull the anchor's answer toward a less confident one, as
    the mutual divergence (:func:`shift_consistency`) does (the shared weights still can).
    """
    log_p = torch.log_softmax(anchor.detach().float(), dim=1)
    log_q = torch.log_softmax(moved.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def teacher_consistency(teacher: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_T || p_view) over both views, where p_T is a frozen teacher's class distribution
    averaged over the same two views (``teacher`` holds its logits for both, first half first).

    Both views learn one shift-averaged answer, so the student is asked to be stable under the
    shift without being pulled toward a less confident answer: the target keeps the teacher's
    confidence wherever the teacher itself is stable.
    """
    t_first, t_second = torch.softmax(teacher.detach().float(), dim=1).chunk(2)
    target = 0.5 * (t_first + t_second)
    log_t = target.clamp_min(1e-12).log()
    kl = [(target * (log_t - torch.log_softmax(v.float(), dim=1))).sum(dim=1) for v in (first, second)]
    return 0.5 * (kl[0] + kl[1]).mean()


def negative_focus_weights(logits: torch.Tensor, labels: torch.Tensor, focus: float) -> torch.Tensor:
    """Per-patch loss weights 1 + focus * p^2 for normal patches (p: the model's own tumour
    probability, no gradient through it) and 1 for tumour patches.

    A focal-style emphasis on one side only: the confident false positives that decide slide-level
    triage (a normal tile at p >= 0.9 weighs about 1 + 0.8 focus) get most of the extra weight,
    normal tiles the model already gets right (p near 0) keep weight 1, and tumour tiles are left
    alone, so the model is not asked to be less sure of tumour.
    """
    p = torch.softmax(logits.detach().float(), dim=1)[:, 1]
    return 1.0 + focus * p.square() * (labels == 0).float()


def focused_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float,
    focus: float,
    across_ranks: bool = False,
) -> torch.Tensor:
    """Cross-entropy averaged with :func:`negative_focus_weights` (the plain mean when focus is 0).

    ``across_ranks``: these patches are one rank's share of a batch split over the processes of a
    data-parallel run (:mod:`training.parallel`). The weights are then divided by their mean over
    the whole batch, not over the share, so that :func:`training.parallel.combine_step` makes the
    whole batch's gradient exactly (one more all-reduce of two numbers).
    """
    each = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, reduction="none")
    weights = negative_focus_weights(logits, labels, focus)
    mean = parallel.mean_over_ranks(weights) if across_ranks else weights.mean()
    return (weights * each).mean() / mean


CONSISTENCY_TERMS = {"mutual": shift_consistency, "anchored": anchored_consistency}
CONSISTENCY_TARGETS = (*CONSISTENCY_TERMS, "teacher")


def selection_shift(
    model: nn.Module, images: NDArray[np.uint8], splits: Splits, size_px: int, batch: int, device: str
) -> dict[str, float]:
    """``robustness.shift_stability`` of ``model`` on ``images`` (patches one pixel larger than
    its input): how much a one-pixel move of the field of view changes the answer."""
    probs = [
        predict(model, c, splits.mean, splits.std, size_px, batch, device)[:, 1]
        for c in robustness.crops(images, size_px)
    ]
    return robustness.shift_stability(probs)


def epoch_checkpoint(out_dir: Path, epoch: int) -> Path:
    """Where epoch ``epoch``'s judged weights are kept (``best.pt``'s format)."""
    return out_dir / "epochs" / f"{epoch:03d}.pt"


def restore_best(out_dir: Path, best_epoch: int) -> bool:
    """Make ``best.pt`` epoch ``best_epoch``'s again if it is not (whether it was changed).

    An epoch writes ``epochs/NNN.pt``, then ``best.pt``, then ``last.pt``. Stopped between the last
    two, a resumed run repeats the epoch, and if the repeat does not come out best (any difference
    in the arithmetic: other threads, a GPU), ``best.pt`` would keep the abandoned attempt.
    """
    kept, best = epoch_checkpoint(out_dir, best_epoch), out_dir / "best.pt"
    if best_epoch < 1 or not kept.is_file():
        return False
    if best.is_file() and torch.load(best, map_location="cpu", weights_only=False).get("epoch") == best_epoch:
        return False
    write_bytes_atomic(best, kept.read_bytes())
    log.info("best.pt restored to epoch %d, the best the resumed run knows", best_epoch)
    return True


def init_weights(model: nn.Module, arch: ArchConfig, path: Path) -> None:
    """Load the weights of the checkpoint at ``path`` (``best.pt`` or ``epochs/NNN.pt``: averaged
    weights), which must hold the same architecture."""
    ckpt = judged_checkpoint(path)
    saved = ArchConfig.from_dict(ckpt["arch"])
    if saved != arch:
        raise CheckpointError(
            f"{path} holds {saved}, not {arch}: start from a checkpoint of the same architecture"
        )
    load_weights(model, ckpt["model"])
    model.train()  # drops e2cnn's expanded eval-mode filters, which cannot be copied (weight EMA)
    log.info("weights from %s (epoch %s)", path, ckpt.get("epoch", ckpt.get("state", {}).get("epoch")))


def frozen_teacher(cfg: TrainConfig, arch: ArchConfig, device: str) -> nn.Module | None:
    """The teacher of ``consistency_target == "teacher"`` (weights from ``cfg.teacher``, eval mode,
    no gradients), or None for the other targets and when the term is off (``consistency`` 0)."""
    if cfg.consistency_target != "teacher" or cfg.consistency <= 0:
        return None
    if not cfg.teacher:
        raise ValueError("consistency_target 'teacher' needs a teacher checkpoint (--teacher)")
    teacher = build_model(arch).to(device)
    init_weights(teacher, arch, Path(cfg.teacher))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            no_decay.add(id(p))
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov momentum 0.9), no weight decay on batch norm and biases."""
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def time_left(epoch_seconds: list[float], epochs_left: int) -> str:
    """How long ``epochs_left`` more epochs take at the mean of ``epoch_seconds``, for the log."""
    seconds = round(sum(epoch_seconds) / len(epoch_seconds) * epochs_left / 60) * 60
    hours, minutes = divmod(seconds // 60, 60)
    return f"about {hours} h {minutes:02d} min" if hours else f"about {max(1, minutes)} min"


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """Write a checkpoint whole or not at all, and on the disk before the call returns (a power
    cut never leaves a truncated ``last.pt`` to resume from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def saved_run(out_dir: Path) -> tuple[TrainConfig, ArchConfig] | None:
    """The settings a run in ``out_dir`` was started with (from ``last.pt``), or None if none."""
    path = out_dir / "last.pt"
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in ckpt["train_config"].items() if k in known}
    return TrainConfig(**saved), ArchConfig.from_dict(ckpt["arch"])


def train(
    cfg: TrainConfig, arch: ArchConfig, resume: bool = False, stop_after: int | None = None
) -> dict[str, Any]:
    """Train, checkpointing ``last.pt`` every epoch and ``best.pt`` at the lowest selection loss.

    Every epoch's judged weights (the averaged ones under a weight average) are also kept as
    ``epochs/NNN.pt``, in ``best.pt``'s format, so epochs near the lowest loss can be compared
    by what the product does with them (the slide benchmark) and any of them quantized.

    ``resume`` continues from ``last.pt``; ``stop_after`` ends this call after that many epochs.
    ``cfg.processes`` above 1 trains data-parallel (:mod:`training.parallel`), the threads split
    among the processes; the returned state is rank 0's.
    """
    if cfg.processes > 1 and torch.cuda.is_available():
        raise ValueError("processes above 1 split training over CPU cores; on a GPU, train with one process")
    if not resume and (Path(cfg.out_dir) / "last.pt").is_file():
        raise FileExistsError(already_a_run(cfg.out_dir))
    return parallel.run(_train, cfg.processes, cfg, arch, resume, stop_after)


def already_a_run(out_dir: str | Path) -> str:
    """Why a new run is not started in ``out_dir``: it would overwrite the run there."""
    return f"{out_dir} already holds a run; pass --resume to continue it, or choose another --out"


def _train(
    ranks: parallel.Ranks, cfg: TrainConfig, arch: ArchConfig, resume: bool, stop_after: int | None
) -> dict[str, Any]:
    """:func:`train` in one process, rank ``ranks.rank`` of ``ranks.size``."""
    all_threads = cfg.threads or torch.get_num_threads()
    own_threads = max(1, all_threads // ranks.size)
    torch.set_num_threads(own_threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = cfg.bf16 if device == "cuda" else effective_bf16(cfg.bf16)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    splits = load_splits(cfg, arch.input_size)
    log.info(
        "train %d, selection %d, held-out %d (unused here); mean %s std %s",
        len(splits.train),
        len(splits.select),
        len(splits.heldout),
        [round(m, 4) for m in splits.mean],
        [round(s, 4) for s in splits.std],
    )
    model = build_model(arch).to(device)
    last_path = out_dir / "last.pt"
    if cfg.init and not (resume and last_path.is_file()):
        init_weights(model, arch, Path(cfg.init))
    optimizer = make_optimizer(model, cfg)
    if cfg.consistency_target not in CONSISTENCY_TARGETS:
        raise ValueError(
            f"consistency_target must be one of {sorted(CONSISTENCY_TARGETS)}, got {cfg.consistency_target!r}"
        )
    teacher = frozen_teacher(cfg, arch, device)
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay and ranks.lead else None
    steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
    if not parallel.usable_batch(len(splits.train) % cfg.batch_size or cfg.batch_size, ranks.size):
        steps_per_epoch -= 1  # a last batch too short to give every process a patch is left out
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    state: dict[str, Any] = {"epoch": 0, "best_loss": math.inf, "best_epoch": -1, "history": []}
    if resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location=device, weights_only=False)
        load_weights(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())  # loaded onto ``device`` with the rest
        if "cuda_rng" in ckpt and device == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu())
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        state = ckpt["state"]
        log.info("resumed from %s at epoch %d", last_path, state["epoch"])
        if ranks.rank == 0:
            restore_best(out_dir, state["best_epoch"])
    if ranks.size > 1:
        parallel.broadcast_model(model)
        log.info("%d processes of %d thread(s), each a share of every batch", ranks.size, own_threads)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "%s %s width %s strides %s%s: %d trainable parameters, device %s",
        arch.arch,
        arch.group_name,
        arch.width,
        arch.strides_text(),
        f" anti-aliased (blur {arch.blur_kernel})" if arch.antialias else "",
        n_params,
        device,
    )
    meta = {
        "arch": arch.to_dict(),
        "train_config": asdict(cfg),
        "mean": splits.mean,
        "std": splits.std,
        "n_train": len(splits.train),
        "n_select": len(splits.select),
        "n_heldout": len(splits.heldout),
    }
    aug = cfg.augment()
    train_eval = splits.train.subset(
        stratified_subset(splits.train.labels, cfg.train_eval_size, cfg.seed + 1)
    )
    shift_check = splits.select.subset(
        stratified_subset(splits.select.labels, min(SHIFT_CHECK_SIZE, len(splits.select)), SHIFT_CHECK_SEED)
    ).images
    end = cfg.epochs if stop_after is None else min(cfg.epochs, state["epoch"] + stop_after)
    epoch_seconds: list[float] = []  # wall time of each epoch this call trained, evaluation included
    # One worker prepares the next batch (decoding, augmentation) while the model trains on this one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") as prep:
        for epoch in range(state["epoch"], end):
            model.train()
            rng = np.random.default_rng([cfg.seed, epoch])
            order = rng.permutation(len(splits.train))  # the same on every rank
            if not ranks.lead:  # each rank its own augmentation and dropout draws
                rng = np.random.default_rng([cfg.seed, epoch, ranks.rank])
                torch.manual_seed(int(rng.integers(2**63)))

            def batch(step: int, order: NDArray[np.int64] = order, rng: np.random.Generator = rng) -> Any:
                whole = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                idx = ranks.share(np.sort(whole))
                images, labels = splits.train.images, splits.train.labels
                raw = augment.seam_composites(images[idx], labels[idx], images, labels, cfg.seam_p, rng)
                y = torch.from_numpy(labels[idx])
                if cfg.consistency > 0:  # each patch twice, one pixel apart: 2 x batch inputs
                    pair = make_pair_batch(raw, arch.input_size, splits.mean, splits.std, rng, aug)
                    return torch.cat(pair), torch.cat([y, y]), len(idx), len(whole)
                x = make_batch(raw, arch.input_size, splits.mean, splits.std, rng, aug)
                return x, y, len(idx), len(whole)

            t0 = time.time()
            loss_sum, consistency_sum, correct, seen = 0.0, 0.0, 0, 0
            pending = prep.submit(batch, 0)
            for step in range(steps_per_epoch):
                x, y, share, whole = pending.result()
                if step + 1 < steps_per_epoch:
                    pending = prep.submit(batch, step + 1)
                x, y = x.to(device), y.to(device)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                objective = loss  # the logged loss stays the plain mean; --negative-focus weighs patches
                if cfg.negative_focus > 0:
                    objective = focused_cross_entropy(
                        logits, y, cfg.label_smoothing, cfg.negative_focus, across_ranks=ranks.size > 1
                    )
                if cfg.consistency > 0:
                    first, second = logits.chunk(2)
                    if teacher is not None:
                        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                            teacher_logits = teacher(x)
                        term = teacher_consistency(teacher_logits, first, second)
                    else:
                        term = CONSISTENCY_TERMS[cfg.consistency_target](first, second)
                    objective = objective + cfg.consistency * term
                    consistency_sum += float(term.detach()) * len(first)
                optimizer.zero_grad(set_to_none=True)
                objective.backward()  # type: ignore[no-untyped-call]
                if ranks.size > 1:  # each rank's objective is its share's part of the whole batch's
                    parallel.combine_step(model, share, whole)
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                if (step + 1) % PROGRESS_EVERY == 0:
                    log.info(
                        "epoch %d step %d/%d loss %.4f, %.1f patches/s",
                        epoch + 1,
                        step + 1,
                        steps_per_epoch,
                        loss_sum / seen,
                        seen * ranks.size / (time.time() - t0),
                    )
            train_time = time.time() - t0
            if ranks.size > 1:
                loss_sum, consistency_sum, n_correct, n_seen = parallel.sum_over_ranks(
                    [loss_sum, consistency_sum, correct, seen]
                )
                correct, seen = int(n_correct), int(n_seen)
                parallel.check_identical(model)
                if not ranks.lead:
                    continue  # rank 0 evaluates and saves
            torch.set_num_threads(all_threads)  # every core evaluates
            judged = ema.model if ema is not None else model
            sizes = (arch.input_size, cfg.eval_batch, device)
            prob = predict(judged, splits.select.images, splits.mean, splits.std, *sizes)[:, 1]
            train_prob = predict(judged, train_eval.images, splits.mean, splits.std, *sizes)[:, 1]
            shift = selection_shift(judged, shift_check, splits, *sizes)
            labels = splits.select.labels
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                "train_acc": correct / seen,
                "train_eval_acc": accuracy(train_eval.labels, train_prob),
                "train_eval_auc": auc(train_eval.labels, train_prob),
                "val_loss": nll(labels, prob),
                "val_acc": accuracy(labels, prob),
                "val_auc": auc(labels, prob),
                "val_shift_mean_abs_dp": shift["shift_mean_abs_dp"],
                "val_shift_flip_rate": shift["shift_flip_rate"],
                "train_consistency": 2 * consistency_sum / seen,
                "patches": seen,
                "patches_per_s": seen / train_time,
                "lr": scheduler.get_last_lr()[0],
            }
            state["history"].append(record)
            state["epoch"] = epoch + 1
            log.info(
                "epoch %d/%d train loss %.4f acc %.4f (clean auc %.4f) | val loss %.4f acc %.4f auc %.4f "
                "shift |dp| %.4f flips %.2f%% | %.1f patches/s",
                epoch + 1,
                cfg.epochs,
                record["train_loss"],
                record["train_acc"],
                record["train_eval_auc"],
                record["val_loss"],
                record["val_acc"],
                record["val_auc"],
                record["val_shift_mean_abs_dp"],
                100 * record["val_shift_flip_rate"],
                record["patches_per_s"],
            )
            model.eval()  # e2cnn's advice: state dicts are saved and loaded in eval mode
            judged_ckpt = {
                **meta,
                "model": judged.state_dict(),
                "epoch": epoch + 1,
                "history": state["history"],
            }
            save_checkpoint(judged_ckpt, epoch_checkpoint(out_dir, epoch + 1))
            if record["val_loss"] < state["best_loss"]:
                state["best_loss"] = record["val_loss"]
                state["best_epoch"] = epoch + 1
                save_checkpoint(judged_ckpt, out_dir / "best.pt")
                log.info("new best selection loss %.4f at epoch %d", record["val_loss"], epoch + 1)
            last = {
                **meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "state": state,
            }
            if device == "cuda":  # dropout masks on the GPU come from its own generator
                last["cuda_rng"] = torch.cuda.get_rng_state()
            if ema is not None:
                last["ema"] = ema.state_dict()
            save_checkpoint(last, last_path)
            torch.set_num_threads(own_threads)
            epoch_seconds.append(time.time() - t0)
            if epoch + 1 < cfg.epochs:
                log.info(
                    "epoch %d took %.1f min; %s to epoch %d",
                    epoch + 1,
                    epoch_seconds[-1] / 60,
                    time_left(epoch_seconds, cfg.epochs - epoch - 1),
                    cfg.epochs,
                )
    log.info("done: best selection loss %.4f at epoch %d", state["best_loss"], state["best_epoch"])
    return state
