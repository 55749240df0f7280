"""glibc malloc settings that keep freed memory for reuse during training.

A training step frees and reallocates the same large activation and gradient buffers every
step. With glibc's defaults, blocks above its (adaptive) mmap threshold are unmapped on free and
the free top of the heap is trimmed, so steps keep paying for fresh zeroed pages: about 40,000
page faults a second in a 2-thread training process. Fixed, higher mmap and trim thresholds keep
those blocks in the heap, where the next step reuses them (`benchmarks/train_speed.py --malloc
keep|default`). Nothing changes what is computed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

# mallopt(3) parameter numbers, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB in the heap; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    ok = all(mallopt(param, value) == 1 for param, value in settings)
    if not ok:
        logger.warning("glibc refused the malloc settings; training runs with its defaults")
    return ok
