"""What keeping freed host memory and huge pages (`minimodal.host_memory`) save: a short training run, timed three ways.

Each run is a fresh process training one preset for a few hundred steps (`train.fit`, compile included) into a
fresh work directory: with MINIMODAL_KEEP_FREED_MEMORY=0 (glibc's defaults), =1 (freed blocks kept), and =1 with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (what the `minimodal` command runs with); the table gives wall time, user
and system CPU time and minor page faults (getrusage of the child). Extra overrides follow a fourth colon.

    python bench/bench_host_memory.py ddpm:fast:400 dalle:default:300:image_tokenizer=runs/dalle/image_tokenizer
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

from minimodal.host_memory import HUGE_PAGES, OPT_OUT

MODES = {"glibc default": {OPT_OUT: "0"}, "freed memory kept": {OPT_OUT: "1"},
         "kept + huge pages": {OPT_OUT: "1", "GLIBC_TUNABLES": HUGE_PAGES}}

RUN = """
import sys
from minimodal import train
from minimodal.config import override
from minimodal.models import get_family
family = get_family(sys.argv[1])
extra = dict(kv.split("=", 1) for kv in sys.argv[5].split(",") if kv)
train.fit(family, override(family.presets[sys.argv[2]], {"steps": int(sys.argv[3]), **extra}), sys.argv[4],
          progress=False)
"""


def measure(family: str, preset: str, steps: int, extra: str, mode: dict[str, str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as workdir:
        env = {**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}, **mode}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", RUN, family, preset, str(steps), workdir, extra], env=env, check=True)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt}


def main(specs: list[str]) -> None:
    print("| run | malloc | wall | user | sys | minor page faults |\n| --- | --- | --- | --- | --- | --- |")
    for spec in specs:
        family, preset, steps, extra = (spec.split(":", 3) + [""])[:4]
        for name, mode in MODES.items():
            m = measure(family, preset, int(steps), extra, mode)
            print(f"| {family} `{preset}`, {steps} steps | {name} | "
                  f"{m['wall']:.1f} s | {m['user']:.1f} s | {m['sys']:.1f} s | {m['faults'] / 1e6:.2f} M |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["ddpm:fast:400", "dalle:fast:600", "clip:fast:300"])
