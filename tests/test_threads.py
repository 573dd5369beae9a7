"""densir.threads: intra-op threads = the cores the process may use (OMP_NUM_THREADS, SLURM, affinity)."""
import os
import subprocess
import sys

import pytest

from densir import threads


@pytest.fixture
def env(monkeypatch):
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    return monkeypatch


def test_affinity_is_the_default(env):
    assert threads.cpu_threads() == (8, "the cores this process may use")


def test_slurm_cpus_per_task_and_torchrun_share(env):
    env.setenv("SLURM_CPUS_PER_TASK", "6")
    assert threads.cpu_threads()[0] == 6
    env.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.cpu_threads()[0] == 1
    env.setenv("SLURM_CPUS_PER_TASK", "2")
    env.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.cpu_threads()[0] == 1  # never 0


def test_omp_num_threads_wins(env):
    env.setenv("SLURM_CPUS_PER_TASK", "6")
    env.setenv("OMP_NUM_THREADS", "3")
    assert threads.cpu_threads() == (3, "OMP_NUM_THREADS")


def test_configure_sets_torch(env):
    import torch

    before = torch.get_num_threads()
    env.setenv("OMP_NUM_THREADS", "1")
    env.setattr(threads, "_done", False)
    try:
        assert threads.configure_cpu_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


_MMAPPED_BLOCKS = """
import ctypes, sys
import numpy as np
from densir import threads

class Mallinfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2

def mmapped_while_held():  # mmapped blocks while a 100 MiB array is held, less those after it is freed
    a = np.ones(100 * 2**20, dtype=np.uint8)
    held = libc.mallinfo2().hblks
    del a
    return held - libc.mallinfo2().hblks

print(mmapped_while_held(), threads.configure_allocator(), mmapped_while_held())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_allocator_serves_large_blocks_from_the_heap():
    """glibc mmaps a 100 MiB block by default (one more mmapped block while it is held); after
    configure_allocator it comes from the heap (none); DENSIR_MALLOC=default leaves glibc alone."""
    env = {k: v for k, v in os.environ.items() if k != "DENSIR_MALLOC"}
    out = subprocess.run([sys.executable, "-c", _MMAPPED_BLOCKS], capture_output=True, text=True, check=True, env=env)
    before, applied, after = out.stdout.split()
    assert applied == "True" and int(before) == 1 and int(after) == 0
    out = subprocess.run([sys.executable, "-c", _MMAPPED_BLOCKS], capture_output=True, text=True, check=True,
                         env={**env, "DENSIR_MALLOC": "default"})
    before, applied, after = out.stdout.split()
    assert applied == "False" and int(after) == 1
