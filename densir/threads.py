"""CPU threads: torch's intra-op threads = the cores this process may use.

    n = OMP_NUM_THREADS if set (the user's word), else SLURM_CPUS_PER_TASK inside a SLURM job,
        else len(os.sched_getaffinity(0)) (the cores the process may run on: cgroups, taskset)

divided by the processes of a torchrun job that share the node (LOCAL_WORLD_SIZE), at least 1.
torch's own default counts the node's physical cores, which oversubscribes a SLURM job that was
given a few cores of a large node and undercounts nothing here; the choice is logged once.
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


def configure_cpu_threads() -> int:
    """Set torch's intra-op threads by :func:`cpu_threads` (once per process); return the count."""
    global _done
    import torch

    n, why = cpu_threads()
    if not _done:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        logger.info("CPU threads: %d (%s)", n, why)
        _done = True
    return n
