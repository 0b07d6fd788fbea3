"""Several processes, one run: JAX's own multi-controller runtime (`jax.distributed`), made a supported path.

Each process runs the same `minimodal train ...` command. After `initialize`, `jax.devices()` lists the
devices of every process, the trainer's 1-D mesh spans them all, each process builds only its own rows of
every batch, and XLA's collectives (NCCL on GPUs, ICI on TPUs, gloo on CPUs) average the gradients. Process 0
alone writes the work directory's files and logs; every process takes part in each checkpoint save.

Inside one process, a CPU can be split into several devices too (`one_cpu_device_per_core`): the same 1-D mesh
then runs each batch data parallel over the cores.
"""

from __future__ import annotations

import os
import sys
import zlib
from typing import Any

import jax
import numpy as np


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               auto: bool = False) -> None:
    """Start `jax.distributed`: explicitly (coordinator "HOST:PORT", number of processes, this process's
    id), or with `auto=True` by JAX's cluster auto-detection (SLURM, Open MPI, TPU pods, ...)."""
    explicit = (coordinator, num_processes, process_id)
    if not auto and any(v is None for v in explicit):
        raise ValueError("--coordinator HOST:PORT, --num-processes N and --process-id I go together "
                         "(or use --distributed alone for the cluster's auto-detection)")
    if not auto:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id must be in [0, {num_processes}) for --num-processes {num_processes}, "
                             f"got {process_id}")
    # CPU processes exchange gradients over gloo (TCP); GPU and TPU backends ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if auto:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"could not start jax.distributed: {str(error).strip().splitlines()[0]}") from None


def is_primary() -> bool:
    """Process 0: the one that writes files and logs."""
    return jax.process_index() == 0


def say(message: str) -> None:
    """A one-line notice on stderr, from process 0 only."""
    if is_primary():
        print(f"minimodal: {message}", file=sys.stderr, flush=True)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def check_same_settings(settings: dict[str, Any]) -> None:
    """Refuse to start when the processes were given different settings, naming the keys that differ."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    keys = sorted(settings)
    digests = np.array([zlib.crc32(repr(settings[k]).encode()) for k in keys], np.int64)
    everyone = np.asarray(multihost_utils.process_allgather(digests))  # (processes, keys)
    differ = [k for i, k in enumerate(keys) if (everyone[:, i] != everyone[0, i]).any()]
    if differ:
        odd = sorted({int(p) for p in np.nonzero((everyone != everyone[0]).any(axis=1))[0]})
        raise ValueError(f"the processes were started with different settings ({', '.join(differ)} differ "
                         f"between process 0 and process(es) {odd}); start every process with the same command")


def local_copy(tree: Any) -> Any:
    """Replicated global arrays -> arrays on this process's first device, so process 0 can sample, evaluate
    and return the model without the other processes (a no-op for one process)."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


# Examples per device at the least: slices of 4 ran slower split than whole (DALL-E's and the DDPM `scratch`
# preset's micro-batches of 8, bench/results/dalle.md), slices of 8 faster (the DDPM default's batches of 16).
MIN_PER_CPU_DEVICE = 8


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one; CPU quotas are not read)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_device_count(examples_at_once: int, cores: int) -> int:
    """The most CPU devices, a power of two and at most one per core, that split `examples_at_once` evenly
    into slices of at least MIN_PER_CPU_DEVICE examples (1 if none does). Powers of two, so that a model trained
    first in the same process (a DDPM's CLIP, batches of 128) splits evenly too."""
    count = 1
    while 2 * count <= cores and examples_at_once % (2 * count) == 0 \
            and examples_at_once // (2 * count) >= MIN_PER_CPU_DEVICE:
        count *= 2
    return count


def one_cpu_device_per_core(examples_at_once: int) -> int | None:
    """Before JAX starts: give its CPU backend one device per usable core, or as many as `cpu_device_count`
    allows for `examples_at_once` (what a step computes at a time: the batch, or one micro-batch slice), so that
    one process runs each batch data parallel over the cores. XLA's CPU backend keeps only about one core busy
    with a small model's operations; split over two devices, CLIP's step runs ~1.2x faster on two cores, the
    DDPM's ~1.25x (bench/results/clip.md, "One device per core"). GPUs and TPUs ignore the setting.

    Changes nothing when the count was chosen already (`XLA_FLAGS=--xla_force_host_platform_device_count=N`,
    `JAX_NUM_CPU_DEVICES=N`) or JAX has started (its devices exist). Returns the count set, or None."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices >= 0:
        return None
    count = cpu_device_count(examples_at_once, usable_cores())
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX has started: its devices are fixed
        return None
    return count
