"""CPU threads: torch's intra-op threads = the cores this process may use.

    n = OMP_NUM_THREADS if set (the user's word), else SLURM_CPUS_PER_TASK inside a SLURM job,
        else len(os.sched_getaffinity(0)) (the cores the process may run on: cgroups, taskset)

divided by the processes of a torchrun job that share the node (LOCAL_WORLD_SIZE), at least 1.
torch's own default counts the node's physical cores, which oversubscribes a SLURM job that was
given a few cores of a large node and undercounts nothing here; the choice is logged once.

The same call keeps glibc's allocator from handing large tensors back to the kernel
(:func:`configure_allocator`): by default glibc serves every block over 32 MiB (an activation of
a 64 x 128 x 1536 training batch is 50 MB) with a fresh ``mmap`` and unmaps it on free, so every
forward and backward pays page faults on its biggest tensors; on the 2-core benchmark machine that
was a quarter of a training step (benchmarks/train_throughput.py). ``DENSIR_MALLOC=default`` keeps
glibc's own behaviour.
"""
from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)
_done = False


def cpu_threads() -> tuple[int, str]:
    """The intra-op thread count for this process and where it came from."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(int(os.environ["OMP_NUM_THREADS"]), 1), "OMP_NUM_THREADS"
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(int(os.environ["SLURM_CPUS_PER_TASK"]) // local, 1), "SLURM_CPUS_PER_TASK"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(cores // local, 1), "the cores this process may use"


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def configure_allocator() -> bool:
    """Serve large blocks from the heap and keep freed memory for reuse (glibc's ``mallopt``:
    mmap threshold 1 GiB, trim threshold 2 GiB); True when applied. No-op off glibc, or with
    ``DENSIR_MALLOC=default``. Memory freed by a step is kept for the next one, so the resident
    size stays at the peak of a step instead of dropping between steps."""
    if os.environ.get("DENSIR_MALLOC", "") == "default":
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def configure_cpu_threads() -> int:
    """Set torch's intra-op threads by :func:`cpu_threads` and the allocator by
    :func:`configure_allocator` (once per process); return the thread count."""
    global _done
    import torch

    n, why = cpu_threads()
    if not _done:
        if configure_allocator():
            logger.info("allocator: large blocks from the heap, freed memory kept (DENSIR_MALLOC=default: glibc's)")
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        logger.info("CPU threads: %d (%s)", n, why)
        _done = True
    return n
