"""The training malloc settings keep freed blocks for reuse (checked by page faults)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# Three 20 MiB blocks allocated, written and freed, eleven times; prints the minor page faults of
# the last ten rounds. With glibc's defaults some of them go back to the kernel and are faulted in
# again (about 10,000 pages here); with the training settings later rounds reuse the same pages.
PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from training.allocator import keep_freed_memory
    if sys.argv[1] == "keep" and not keep_freed_memory():
        sys.exit(3)
    def one_round():
        blocks = [np.ones(20 * 2**20 // 8) for _ in range(3)]
        del blocks
    one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        one_round()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc settings")


def faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr  # 3: glibc refused the settings
    return int(done.stdout)


@glibc_only
def test_kept_blocks_are_reused_without_new_page_faults() -> None:
    pages_per_round = 3 * 20 * 2**20 // 4096
    assert faults("keep") < pages_per_round // 30  # ten rounds refault under a thirtieth of one
