"""The re-ranker's trainer on real SciFact data: every loss decreases when training on get_data.sh's
BM25 groups (through the real trainer, from MiniLM's first layer and a fresh head)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import head_lines, rerank_mean_loss

from densir.reranker.modeling import CrossEncoderReranker

N_GROUPS, N_PASSAGES, MAX_LEN = 12, 4, 64


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory, minilm_path) -> Path:
    """One initial re-ranker, so 'before' and 'after' start from the same weights: MiniLM's
    embeddings and first layer + a fresh head (a random tiny BERT needs far more steps to learn
    anything about BM25 negatives, which share the query's words by construction)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("rerank-start") / "model"
    CrossEncoderReranker.load(minilm_path, max_len=MAX_LEN, num_hidden_layers=1).save(out)
    return out


@pytest.mark.parametrize("loss", ["bce", "listwise", "lambda"])
def test_each_loss_decreases_on_scifact_groups(loss, scifact_data, start_dir, tmp_path):
    from densir.driver.train_reranker import main
    from densir.losses import build_loss_from_args
    from densir.reranker.arguments import RerankerTrainingArguments

    groups = head_lines(scifact_data / "train.bm25.jsonl", tmp_path / "groups.jsonl", N_GROUPS)
    epochs = 6
    summary = main(["--model_name_or_path", str(start_dir), "--train_dir", str(groups), "--output_dir",
                    str(tmp_path / "out"), "--loss", loss, "--train_n_passages", str(N_PASSAGES), "--max_len",
                    str(MAX_LEN), "--per_device_train_batch_size", "4", "--learning_rate", "2e-3",
                    "--num_train_epochs", str(epochs), "--save_steps", "1000", "--seed", "42", "--logging_steps", "4"])
    assert summary["global_step"] == epochs * N_GROUPS // 4
    loss_fn = build_loss_from_args(RerankerTrainingArguments(output_dir=str(tmp_path), loss=loss))
    before = rerank_mean_loss(start_dir, groups, loss_fn, epochs, N_PASSAGES, MAX_LEN)
    after = rerank_mean_loss(tmp_path / "out", groups, loss_fn, epochs, N_PASSAGES, MAX_LEN)
    # and below what constant scores cost: the model ranks positives up, not just learns a prior
    constant = float(loss_fn(torch.zeros(1, N_PASSAGES), torch.tensor([[1.0] + [0.0] * (N_PASSAGES - 1)])))
    assert after < 0.75 * before and after < 0.9 * constant, (loss, before, after, constant)
