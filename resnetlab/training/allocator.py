"""Keep freed activation memory in the process instead of handing it back to the OS.

glibc's malloc serves large blocks with mmap and returns them (and the top of the heap)
to the kernel on free. A CPU training step frees and re-allocates its activations every
iteration, so each step touches ~100 MB of fresh pages: ~26k page faults per ResNet-20
step at batch 128, each page zeroed by the kernel. Raising the mmap threshold to its
maximum (32 MiB) and disabling heap trimming keeps those pages mapped: measured down to
~1.7k faults per step (BENCHMARKS.md). Linux/glibc only; a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
NO_TRIM = 2**31 - 1

_applied = False


def glibc_available() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Tune glibc malloc for repeated large allocations; True when it took effect."""
    global _applied
    if _applied:
        return True
    if not glibc_available():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, NO_TRIM)
        )
    except (OSError, AttributeError):
        return False
    _applied = ok
    return ok
