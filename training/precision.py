"""Whether ``train --bf16`` runs in bfloat16 on this CPU.

bfloat16 autocast pays only where the CPU computes in bfloat16 natively (AVX512-BF16 or AMX, as
oneDNN reports it). Elsewhere PyTorch emulates it: on an AVX2-only CPU a C4 training step ran
about 5 times slower than in float32 (`benchmarks/train_speed.py --bf16`: 11 against 56
patches/s, 2 threads). A run asked for bfloat16 (on the command line, or saved in a run started
on another machine and resumed here) therefore trains in float32 on such a CPU, and says so.
The weights and the optimiser are float32 either way; only the forward pass's precision differs.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def native_bfloat16() -> bool:
    """True if oneDNN on this CPU computes in bfloat16 natively."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no native path either
        return False


def effective_bf16(requested: bool) -> bool:
    """bfloat16 autocast if it was requested and the CPU runs it natively; float32 otherwise."""
    if not requested:
        return False
    if native_bfloat16():
        return True
    log.warning(
        "--bf16 asked for, but this CPU has no native bfloat16 (%s): training in float32, "
        "which is several times faster here",
        torch.backends.cpu.get_cpu_capability(),
    )
    return False
