"""Data-parallel training: real spawned processes joined by gloo on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.training import rank_jobs
from training import parallel
from training.cli import main
from training.train import focused_cross_entropy, negative_focus_weights


def test_the_ranks_share_every_batch_between_them() -> None:
    idx = np.arange(10, 17)
    shares = [parallel.Ranks(r, 3).share(idx) for r in range(3)]
    assert sorted(np.concatenate(shares)) == list(idx)
    assert [len(s) for s in shares] == [3, 2, 2]
    assert parallel.Ranks().lead and not parallel.Ranks(1, 2).lead
    assert parallel.usable_batch(2, 2) and not parallel.usable_batch(1, 2)
    with pytest.raises(ValueError):
        parallel.Ranks(2, 2)


def test_one_process_runs_here_without_a_group() -> None:
    assert parallel.run(lambda ranks, v: (ranks, v), 1, 5) == (parallel.Ranks(0, 1), 5)
    with pytest.raises(ValueError, match="processes"):
        parallel.run(rank_jobs.summed, 0, 1.0)


@pytest.mark.parametrize("count", ["0", "-1", "two"])
def test_a_process_count_below_one_is_a_usage_error(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--processes", count])
    assert stop.value.code == 2 and "processes is a whole number, 1 or more" in capsys.readouterr().err


def test_values_are_summed_over_the_ranks() -> None:
    assert parallel.run(rank_jobs.summed, 3, 0.5) == [0.5 + 1.5 + 2.5, 3.0]


def _one_process(batch_norm: bool) -> tuple[nn.Module, list[torch.Tensor]]:
    """The whole batch's gradient in one process, and each share's batch-norm statistics."""
    model = rank_jobs.small_net(batch_norm)
    x, y = rank_jobs.batch()
    nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
    stats = []
    for r in range(2):
        alone = rank_jobs.small_net(batch_norm)
        alone(x[parallel.Ranks(r, 2).share(np.arange(rank_jobs.BATCH))])
        stats.append(alone.get_buffer("1.running_mean") if batch_norm else torch.zeros(0))
    return model, stats


def test_two_ranks_take_the_step_of_the_whole_batch() -> None:
    held = parallel.run(rank_jobs.combined_step, 2, False)
    whole, _ = _one_process(batch_norm=False)
    for name, p in whole.named_parameters():
        assert p.grad is not None
        # float32 sums of a few dozen terms of magnitude <= 1, added in another order
        torch.testing.assert_close(held[f"grad.{name}"], p.grad, rtol=1e-5, atol=1e-6)


def test_two_ranks_take_the_negative_focus_step_of_the_whole_batch() -> None:
    focus = 4.0
    model = rank_jobs.small_net(batch_norm=False)
    x, y = rank_jobs.batch()
    weights = negative_focus_weights(model(x), y, focus)
    shares = [parallel.Ranks(r, 2).share(np.arange(rank_jobs.BATCH)) for r in range(2)]
    # the shares' weights differ, so normalising each by its own would not give the whole batch's step
    assert abs(float(weights[shares[0]].mean() - weights[shares[1]].mean())) > 0.1
    focused_cross_entropy(model(x), y, 0.0, focus).backward()  # type: ignore[no-untyped-call]
    held = parallel.run(rank_jobs.combined_step, 2, False, focus)
    for name, p in model.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(held[f"grad.{name}"], p.grad, rtol=1e-5, atol=1e-6)


def test_batch_norm_statistics_are_averaged_over_the_ranks() -> None:
    held = parallel.run(rank_jobs.combined_step, 2, True)
    _, stats = _one_process(batch_norm=True)
    torch.testing.assert_close(held["buffer.1.running_mean"], (stats[0] + stats[1]) / 2)
    assert int(held["buffer.1.num_batches_tracked"]) == 1


def test_ranks_that_drift_apart_are_refused() -> None:
    with pytest.raises(RuntimeError, match=r"no longer hold the same weights|training rank 1"):
        parallel.run(rank_jobs.diverged, 2)


def test_a_failing_rank_stops_the_run_and_is_named() -> None:
    with pytest.raises(RuntimeError, match=r"training rank 1 \(exit code 1\)"):
        parallel.run(rank_jobs.rank_one_fails, 2)


def test_a_rank_that_cannot_start_stops_the_run_at_once() -> None:
    """The job's arguments fail to load in the spawned rank: rank 0 must not wait for it at the
    rendezvous (30 minutes) but stop and name it."""
    with pytest.raises(RuntimeError, match=r"training rank 1 \(exit code 1\) stopped"):
        parallel.run(rank_jobs.summed, 2, rank_jobs.LoadsNowhereElse())


def test_two_processes_train_checkpoint_and_resume(
    pcam_h5: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    args = [
        *("train", "--arch", "equivariant", "--group", "C4", "--width", "0.25", "--strides", "11111"),
        *("--antialias", "--recipe", "robust", "--epochs", "2", "--train-size", "70", "--batch-size", "16"),
        *("--threads", "2", "--processes", "2", "--data", str(pcam_h5)),
        *("--cache-dir", str(tmp_path / "cache"), "--out", str(out)),
    ]
    assert main([*args, "--stop-after", "1"]) == 0
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["train_config"]["processes"] == 2 and first["state"]["epoch"] == 1
    # 70 patches in batches of 16: 4 full batches and a last one of 6, shared 3 and 3
    assert first["state"]["history"][0]["patches"] == 70
    assert main([*args, "--resume"]) == 0
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["state"]["epoch"] == 2 and last["ema"]["updates"] == 10
    assert all(np.isfinite(r["val_loss"]) for r in last["state"]["history"])
    assert (out / "best.pt").is_file() and (out / "epochs" / "002.pt").is_file()
    one = [a if a != "2" or args[i - 1] != "--processes" else "1" for i, a in enumerate(args)]
    assert main([*one, "--resume"]) == 0  # finished already: nothing to train, but it is told
    assert "resuming with --processes 1, not the 2 the run started with" in caplog.text


def test_waiting_ranks_leave_the_cores_to_rank_0() -> None:
    # rank 0 evaluates on every core between epochs while the others wait in a collective
    assert parallel.run(rank_jobs.idle_wait, 2, 2.0) < 0.5  # CPU seconds of 2 s of waiting


def test_ctrl_c_ends_a_two_process_run_cleanly(pcam_h5: Path, tmp_path: Path) -> None:
    command = [
        *(sys.executable, "-m", "training", "train", "--arch", "conventional", "--width", "0.25"),
        *("--epochs", "50", "--train-size", "70", "--batch-size", "16", "--threads", "2"),
        *("--processes", "2", "--data", str(pcam_h5), "--cache-dir", str(tmp_path / "cache")),
        *("--out", str(tmp_path / "run")),
    ]
    # its own session: the Ctrl-C goes to its process group, as a terminal sends it
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert run.stderr is not None
    lines = []
    for line in run.stderr:
        lines.append(line)
        if "processes of 1 thread" in line:
            break
    os.killpg(run.pid, signal.SIGINT)
    _, rest = run.communicate(timeout=120)
    text = "".join(lines) + rest
    assert run.returncode == 130, text
    assert "interrupted; finished epochs are saved" in text and "Traceback" not in text
    assert _group_ends(run.pid, within_s=10.0)  # the other rank (and the spawn tracker) too


def _group_ends(pgid: int, within_s: float) -> bool:
    """Whether process group ``pgid`` has no process left within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
