"""`host_memory.keep_freed_memory`: a freed large block is reused, not unmapped and faulted in afresh."""

import platform
import subprocess
import sys

import pytest

from minimodal.host_memory import OPT_OUT, keep_freed_memory

# On a worker thread, as XLA's CPU runtime does with a step's temporaries: malloc, fill and free a 48 MB block
# (above glibc's largest mmap threshold, within a thread's 64 MB heap) five times; print the minor page faults of
# the last four. Without the setting each block is a fresh mmap: 12,288 new 4 KB pages a time. (numpy is no
# probe: it asks for huge pages, 2 MB per fault.)
PROBE = """
import ctypes, ctypes.util, resource, sys, threading
if sys.argv[1] == "1":
    from minimodal.host_memory import OPT_OUT, keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def churn():
    block = libc.malloc(48 * 2**20)
    ctypes.memset(block, 1, 48 * 2**20)
    libc.free(block)
def five_churns():
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        churn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
worker = threading.Thread(target=five_churns)  # one thread: a second one might find the first's heap still held
worker.start()
worker.join()
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _faults(keep: bool) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if keep else "0"], capture_output=True, text=True,
                         check=True, env={OPT_OUT: "1"})
    return int(out.stdout)


@glibc_only
def test_a_freed_block_is_reused_without_new_page_faults():
    assert _faults(keep=False) > 4 * 12_000  # the default: every block mapped anew
    assert _faults(keep=True) < 2_000  # kept: the same pages again


@glibc_only
def test_the_opt_out_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(OPT_OUT, "0")
    assert keep_freed_memory() is False
    monkeypatch.setenv(OPT_OUT, "1")
    assert keep_freed_memory() is True
