"""densir.threads: intra-op threads = the cores the process may use (OMP_NUM_THREADS, SLURM, affinity)."""
import os

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
