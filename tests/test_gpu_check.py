"""scripts/gpu_check.sh runs where no GPU is (GPU_CHECK_ALLOW_CPU=1): the CPU part passes, the
GPU-only checks are reported SKIP, and without the variable it refuses to pretend."""
from __future__ import annotations

import json

import pytest
from conftest import run_cmd


@pytest.mark.slow
def test_gpu_check_cpu_part(tmp_path, minilm_path, shared_data):
    """The real model (a random tiny BERT's fresh re-ranking head gives near-constant scores, which
    bf16 rounding reorders), on a 128-doc slice and 2 training steps, to stay a few minutes."""
    env = {"GPU_CHECK_ALLOW_CPU": "1", "GPU_CHECK_STEPS": "2", "GPU_CHECK_MODEL": minilm_path, "GPU_CHECK_DOCS": "128",
           "GPU_CHECK_OUT": str(tmp_path), "DENSIR_SHARED_DATA": str(shared_data), "OMP_NUM_THREADS": "2"}
    proc = run_cmd(["bash", "scripts/gpu_check.sh"], env=env, timeout=2400)
    table = json.loads((tmp_path / "gpu_check.json").read_text())["results"]
    status = {name: s for name, s, _ in table}
    assert status["train-torchrun-nccl"] == status["faiss-gpu-flat"] == status["faiss-gpu-ivf-nprobe"] == "SKIP"
    assert status["train-fp16"] == "SKIP"
    for name in ("train-bf16", "train-grad-cache", "train-grad-checkpointing", "encode-fp32", "encode-bf16",
                 "rerank-bf16"):
        assert status[name] == "PASS", (name, proc.stdout)
    assert "passed, 0 failed" in proc.stdout


def test_gpu_check_refuses_without_a_gpu(tmp_path):
    proc = run_cmd(["bash", "scripts/gpu_check.sh"], env={"GPU_CHECK_OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""},
                   check=False, timeout=300)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
