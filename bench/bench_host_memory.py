"""What keeping freed host memory (`minimodal.host_memory`) saves: a short training run, timed with and without.

Each run is a fresh process training one preset for a few hundred steps (`train.fit`, compile included) into a
fresh work directory, with MINIMODAL_KEEP_FREED_MEMORY=0 (glibc's defaults) and =1 (the default); the table gives
wall time, user and system CPU time and minor page faults (getrusage of the child).

    python bench/bench_host_memory.py ddpm:fast:400 dalle:fast:600   # prints markdown rows
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

from minimodal.host_memory import OPT_OUT

RUN = """
import sys
from minimodal import train
from minimodal.config import override
from minimodal.models import get_family
family = get_family(sys.argv[1])
train.fit(family, override(family.presets[sys.argv[2]], {"steps": int(sys.argv[3])}), sys.argv[4], progress=False)
"""


def measure(family: str, preset: str, steps: int, keep: bool) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as workdir:
        env = {**os.environ, OPT_OUT: "1" if keep else "0"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", RUN, family, preset, str(steps), workdir], env=env, check=True)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt}


def main(specs: list[str]) -> None:
    print("| run | malloc | wall | user | sys | minor page faults |\n| --- | --- | --- | --- | --- | --- |")
    for spec in specs:
        family, preset, steps = spec.split(":")
        for keep in (False, True):
            m = measure(family, preset, int(steps), keep)
            print(f"| {family} `{preset}`, {steps} steps | {'freed memory kept' if keep else 'glibc default'} | "
                  f"{m['wall']:.1f} s | {m['user']:.1f} s | {m['sys']:.1f} s | {m['faults'] / 1e6:.2f} M |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["ddpm:fast:400", "dalle:fast:600", "clip:fast:300"])
