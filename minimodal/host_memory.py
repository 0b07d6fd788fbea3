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

Huge pages: a block glibc still maps afresh (the default DALL-E's step frees 174 MB) costs one page fault per 4 KB
page, 42,000 per step. Asked with the tunable `glibc.malloc.hugetlb=1`, glibc marks the memory it maps for
transparent huge pages (`madvise(MADV_HUGEPAGE)`; the kernel's THP setting `madvise`, the common default), so the
same block faults in 2 MB at a time: the default DALL-E's transformer ran 6.0 -> 7.1 steps/s, its kernel time
25 -> 9 s per 300 steps (bench/results/trainer.md, "Huge pages"). glibc reads tunables only when a process starts,
so the `minimodal` command and `python -m minimodal.publish` re-run themselves once with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (`run_with_huge_pages`), and `make test` sets it; a script or notebook of
your own gets it by being started with that variable set.

`import minimodal` calls `keep_freed_memory()` once; set MINIMODAL_KEEP_FREED_MEMORY=0 to leave malloc alone
(then no re-run for huge pages either).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
NEVER_TRIM = 2**31 - 1  # bytes: the largest threshold mallopt takes (an int)
OPT_OUT = "MINIMODAL_KEEP_FREED_MEMORY"
HUGE_PAGES = "glibc.malloc.hugetlb=1"  # glibc >= 2.35; older versions ignore a tunable they do not know


def _applies(environ: Mapping[str, str]) -> bool:
    """glibc, and MINIMODAL_KEEP_FREED_MEMORY not 0."""
    return environ.get(OPT_OUT, "1") != "0" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed blocks (see the module docstring). True when applied; False where the
    C library is not glibc (macOS, musl: nothing to do) or MINIMODAL_KEEP_FREED_MEMORY=0 asks not to."""
    if not _applies(os.environ):
        return False
    libc = ctypes.CDLL("libc.so.6")  # glibc's soname (`find_library` would run `ldconfig` at every import)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


def huge_pages_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` with HUGE_PAGES added to GLIBC_TUNABLES (tunables are joined by ":"); None when there is nothing
    to add: the hugetlb tunable already set (to any value), MINIMODAL_KEEP_FREED_MEMORY=0, or not glibc."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if not _applies(environ) or "glibc.malloc.hugetlb=" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES}


def run_with_huge_pages() -> None:
    """Re-run this process from the start (the same interpreter and command line) with huge pages asked for,
    unless it already has them or `huge_pages_environment` says there is nothing to add. Call it first thing in
    a command's entry point: the process is replaced, so nothing done before it survives."""
    environ = huge_pages_environment(os.environ)
    if environ is None or not sys.executable or len(sys.orig_argv) < 2:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
