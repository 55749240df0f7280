from __future__ import annotations

import logging

import pytest

from training.precision import effective_bf16, native_bfloat16


def test_float32_is_never_turned_into_bfloat16() -> None:
    assert effective_bf16(False) is False


def test_bfloat16_only_where_the_cpu_runs_it_natively(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.precision"):
        chosen = effective_bf16(True)
    assert chosen is native_bfloat16()
    warned = [r for r in caplog.records if "no native bfloat16" in r.getMessage()]
    # the fallback to float32 is said once, and only when it happens
    assert len(warned) == (0 if chosen else 1)
