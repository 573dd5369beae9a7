"""DDP on CPU (gloo): gradient checkpointing under a 2-process torchrun gives the gradients of the
run without it, and ranks get equal local batches (so the mean of the ranks' losses is the loss
of the global batch) even when the data does not divide into whole global batches."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import head_lines, run_cmd
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def groups22(tmp_path_factory, scifact_data) -> Path:
    """22 real SciFact groups: with 2 ranks x 4 queries the last global batch is short."""
    return head_lines(scifact_data / "train.bm25.jsonl", tmp_path_factory.mktemp("groups") / "g22.jsonl", 22)


def _torchrun(model, groups, out, *extra):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    args = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "densir.driver.train",
            "--model_name_or_path", str(model), "--train_dir", str(groups), "--output_dir", str(out),
            "--pooling", "mean", "--normalize", "true", "--temperature", "0.05", "--q_max_len", "24",
            "--p_max_len", "48", "--disable_tqdm", "true", "--train_n_passages", "3",
            "--per_device_train_batch_size", "4", "--negatives_x_device", "--optim", "sgd",
            "--lr_scheduler_type", "constant", "--learning_rate", "1.0", "--logging_steps", "1",
            "--save_strategy", "no", *map(str, extra)]
    return run_cmd(args, timeout=600, env={"OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_gradient_checkpointing_under_torchrun_same_gradients(tmp_path, tiny_bert_nodropout_dir, groups22):
    """Plain SGD at lr 1 for 3 steps: the weight change is the sum of the steps' gradients, so equal
    weights (1e-5) = equal gradients. Three steps, because DDP's "mark a variable ready only once"
    and unused-parameter errors show from the second step on."""
    _torchrun(tiny_bert_nodropout_dir, groups22, tmp_path / "plain", "--max_steps", 3)
    proc = _torchrun(tiny_bert_nodropout_dir, groups22, tmp_path / "ckpt", "--max_steps", 3, "--gradient_checkpointing")
    assert "mark a variable ready only once" not in proc.stderr
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "ckpt" / "model.safetensors")
    init = load_file(tiny_bert_nodropout_dir / "model.safetensors")
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3  # it did learn
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-5, worst


@pytest.mark.slow
def test_ranks_get_equal_local_batches(tmp_path, tiny_bert_nodropout_dir, groups22):
    """22 groups, 2 ranks x 4: 3 steps an epoch, the last one filled by accelerate's even_batches
    from the epoch's start, so both ranks train on 4 queries at every step. A short rank would make
    the mean of the ranks' losses differ from the global batch's loss, and the cross-device gather
    (densir.retriever.loss.gather_with_grad) refuses unequal local batches: the run completing is
    the check."""
    import json

    _torchrun(tiny_bert_nodropout_dir, groups22, tmp_path / "run", "--num_train_epochs", 1, "--learning_rate", "0.0")
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["global_step"] == 3
