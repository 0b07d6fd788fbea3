"""Keep freed host memory for reuse instead of handing it back to the OS after every step (glibc only).

XLA's CPU runtime mallocs each run's temporaries and frees them at the end: one 58 MB block per train step of
the fast tour's DDPM. glibc serves a block above its mmap threshold (at most 32 MB) with a fresh `mmap` and
`munmap`s it on free, so every step faults in ~14,000 new pages: a sixth of a training run's CPU time
(bench/results/trainer.md, "Freed memory kept"). With mmap never used for a block (M_MMAP_MAX = 0) and the heap
trimmed only when 2 GB at its top are free (M_TRIM_THRESHOLD = 2³¹−1), a freed block stays in the heap and the
next step reuses it. The price: the process keeps its peak host memory until it exits. A block larger than a
worker thread's heap (64 MB; CLIP's step frees 112 MB) is still mapped afresh: sending every thread to the one
main heap (M_ARENA_MAX = 1) would keep it too, but made the DDPM's steps 19% slower (threads waiting for the
heap's lock).

`import minimodal` calls `keep_freed_memory()` once; set MINIMODAL_KEEP_FREED_MEMORY=0 to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
NEVER_TRIM = 2**31 - 1  # bytes: the largest threshold mallopt takes (an int)
OPT_OUT = "MINIMODAL_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed blocks (see the module docstring). True when applied; False where the
    C library is not glibc (macOS, musl: nothing to do) or MINIMODAL_KEEP_FREED_MEMORY=0 asks not to."""
    if os.environ.get(OPT_OUT, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")  # glibc's soname (`find_library` would run `ldconfig` at every import)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
