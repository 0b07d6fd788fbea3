"""`host_memory`: a freed large block is reused, not unmapped and faulted in afresh; a block too large to keep is
faulted in by huge pages when the process was started with glibc's hugetlb tunable (commands re-run themselves so)."""

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minimodal.host_memory import HUGE_PAGES, OPT_OUT, huge_pages_environment, keep_freed_memory

# On a worker thread, as XLA's CPU runtime does with a step's temporaries: malloc, fill and free a 48 MB block
# (above glibc's largest mmap threshold, within a thread's 64 MB heap) five times; print the minor page faults of
# the last four. Without the setting each block is a fresh mmap: 12,288 new 4 KB pages a time. (numpy is no
# probe: it asks for huge pages, 2 MB per fault.)
PROBE = """
import ctypes, ctypes.util, resource, sys, threading
if sys.argv[1] == "1":
    from minimodal.host_memory import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
MB = int(sys.argv[2]) if len(sys.argv) > 2 else 48
def churn():
    block = libc.malloc(MB * 2**20)
    ctypes.memset(block, 1, MB * 2**20)
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


def test_huge_pages_are_added_to_the_tunables_once_and_never_against_a_choice():
    if platform.libc_ver()[0] != "glibc":
        assert huge_pages_environment({}) is None
        return
    assert huge_pages_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": HUGE_PAGES}
    assert huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=2:" + HUGE_PAGES)
    assert huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # the user's choice
    assert huge_pages_environment({"GLIBC_TUNABLES": HUGE_PAGES}) is None  # already there: no second re-run
    assert huge_pages_environment({OPT_OUT: "0"}) is None


@glibc_only
def test_a_command_reruns_itself_once_with_huge_pages_and_its_arguments():
    code = ("import os, sys; from minimodal.host_memory import run_with_huge_pages; print('start', flush=True); "
            "run_with_huge_pages(); print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", code, "a b", "c"], capture_output=True, text=True, check=True,
                         env=env).stdout.splitlines()
    assert out == ["start", "start", f"{HUGE_PAGES} ['a b', 'c']"]  # started twice, then ran on


def _thp_mode() -> str:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    text = path.read_text() if path.exists() else "[never]"
    return text[text.index("[") + 1: text.index("]")]


@glibc_only
@pytest.mark.skipif(_thp_mode() == "never", reason="the kernel gives no transparent huge pages")
def test_a_block_too_large_to_keep_faults_in_by_huge_pages_with_the_tunable():
    def faults(tunables):  # a 96 MB block: larger than a thread's heap, so mapped afresh every time
        env = {OPT_OUT: "1", **({"GLIBC_TUNABLES": tunables} if tunables else {})}
        return int(subprocess.run([sys.executable, "-c", PROBE, "1", "96"], capture_output=True, text=True,
                                  check=True, env=env).stdout)
    assert faults("") > 4 * 24_000  # 4 KB pages: 24,576 per block
    assert faults(HUGE_PAGES) < 4 * 2_000  # 2 MB pages: 48 per block


@glibc_only
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("opt_out", [None, "0"])
@pytest.mark.parametrize("tunables", [None, "glibc.malloc.arena_max=2", "glibc.malloc.hugetlb=0", HUGE_PAGES])
def test_make_test_sets_the_tunables_as_the_commands_do(tunables, opt_out):
    """`make test` spells the setting out (make cannot import it): the same value `huge_pages_environment` gives,
    and the caller's own (or none) where it gives nothing (MINIMODAL_KEEP_FREED_MEMORY=0, hugetlb already set)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT, "MAKEFLAGS", "MAKELEVEL")}
    for name, value in (("GLIBC_TUNABLES", tunables), (OPT_OUT, opt_out)):
        if value is not None:
            env[name] = value
    dry_run = subprocess.run(["make", "-n", "test"], cwd=Path(__file__).parents[1], env=env, capture_output=True,
                             text=True, check=True).stdout
    made = [w.split("=", 1)[1] for w in dry_run.split() if w.startswith("GLIBC_TUNABLES=")]
    expected = huge_pages_environment(env)
    assert made == [expected["GLIBC_TUNABLES"] if expected is not None else tunables or ""]
