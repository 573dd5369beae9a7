"""Matryoshka (densir.retriever.matryoshka): the MRL loss is the weighted sum of the objective at each
truncated size; training records the sizes; encode --embedding_dim truncates and re-normalizes and
the shard records the size; search refuses to mix sizes with one clear error line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cmd

from densir.arguments import parse_args
from densir.losses import KLDistillationLoss
from densir.retriever.arguments import DataArguments, DenseTrainingArguments, EncodeArguments, ModelArguments
from densir.retriever.loss import CombinedLoss, ContrastiveLoss, GroupScoreLoss
from densir.retriever.matryoshka import MatryoshkaLoss, parse_dims


def _infonce(q, p, temperature):
    """Cross entropy over all passages of the batch, positive of query i at i*n: written out here."""
    n = p.shape[0] // q.shape[0]
    scores = (q @ p.T) / temperature
    return float(np.mean([-(scores[i, i * n] - np.log(np.exp(scores[i]).sum())) for i in range(q.shape[0])]))


def test_mrl_loss_is_the_weighted_sum_of_per_size_losses():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 32, dtype=torch.float64), dim=-1)
    p = F.normalize(torch.randn(12, 32, dtype=torch.float64), dim=-1)
    dims, weights = [32, 16, 8, 4], [1.0, 0.5, 0.25, 2.0]
    mrl = MatryoshkaLoss(ContrastiveLoss(0.05), dims, weights, normalize=True)
    expected = 0.0
    for d, w in zip(dims, weights):
        qd = q[:, :d].numpy() / np.linalg.norm(q[:, :d].numpy(), axis=1, keepdims=True)
        pd = p[:, :d].numpy() / np.linalg.norm(p[:, :d].numpy(), axis=1, keepdims=True)
        expected += w * _infonce(qd, pd, 0.05)
    assert mrl(q, p).item() == pytest.approx(expected, rel=1e-5)
    # not normalizing: the raw prefixes
    raw = MatryoshkaLoss(ContrastiveLoss(1.0), dims, weights, normalize=False)
    assert raw(q, p).item() == pytest.approx(
        sum(w * _infonce(q[:, :d].numpy(), p[:, :d].numpy(), 1.0) for d, w in zip(dims, weights)), rel=1e-5)
    # the distillation objective is wrapped the same way, teacher scores passed through
    combined = CombinedLoss(ContrastiveLoss(0.05), GroupScoreLoss(KLDistillationLoss(), 0.05), 1.0, 0.5)
    teacher = torch.randn(4, 3)
    mrl = MatryoshkaLoss(combined, dims, weights, normalize=True)
    assert mrl.needs_teacher
    by_size = sum(w * combined(F.normalize(q[:, :d], dim=-1), F.normalize(p[:, :d], dim=-1), teacher_scores=teacher)
                  for d, w in zip(dims, weights))
    assert mrl(q, p, teacher_scores=teacher).item() == pytest.approx(by_size.item(), rel=1e-6)


def test_parse_dims_refuses_bad_sizes():
    assert parse_dims("384,256,128,64") == ([384, 256, 128, 64], [1.0] * 4)
    assert parse_dims(None) is None
    for dims, weights, msg in [("8,8", None, "distinct"), ("0,4", None, "distinct positive"),
                               ("64,a", None, "comma-separated"), ("8,4", "1", "2 non-negative weights"),
                               (None, "1", "needs --matryoshka_dims")]:
        with pytest.raises(ValueError, match=msg):
            parse_dims(dims, weights)
    with pytest.raises(ValueError, match="384 dimensions"):
        parse_dims("512,256", hidden_size=384)


def test_train_with_matryoshka_then_encode_truncated_and_search_refuses_mixed_sizes(tmp_path, tiny_bert_dir):
    from llm_models import write_groups

    from densir.driver import train as driver
    from densir.retriever.encode import encode_file

    groups = write_groups(tmp_path / "groups.jsonl", n=8)
    out = tmp_path / "run"


    driver.train(*parse_args(ModelArguments, DataArguments, DenseTrainingArguments, argv=[
        "--model_name_or_path", tiny_bert_dir, "--train_dir", str(groups), "--output_dir", str(out),
        "--pooling", "mean", "--normalize", "true", "--temperature", "0.05", "--q_max_len", "16", "--p_max_len", "24",
        "--train_n_passages", "2", "--per_device_train_batch_size", "4", "--max_steps", "2",
        "--matryoshka_dims", "32,16,8", "--matryoshka_weights", "1,1,0.5", "--save_strategy", "no",
        "--disable_tqdm", "true"]))
    assert json.loads((out / "densir_config.json").read_text())["matryoshka_dims"] == [32, 16, 8]
    # the trainer's objective is the wrapped one
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import DenseTrainer

    args = parse_args(DenseTrainingArguments, argv=["--output_dir", str(tmp_path / "t"), "--temperature", "0.05",
                                                    "--matryoshka_dims", "32,16,8", "--matryoshka_weights", "1,1,0.5"])[0]
    trainer = DenseTrainer(model=DenseEncoder.load(str(out)), args=args)
    loss = trainer.loss_fn
    assert isinstance(loss, MatryoshkaLoss) and (loss.dims, loss.weights, loss.normalize) == ([32, 16, 8], [1, 1, 0.5], True)
    assert isinstance(loss.loss, ContrastiveLoss) and loss.loss.temperature == 0.05

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"docid": f"d{i}", "title": "", "text": f"passage {i} about sleep"}) + "\n"
                              for i in range(10)))
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"query_id": "q0", "query": "sleep"}) + "\n")

    def encode(path, name, *extra):
        return encode_file(*parse_args(ModelArguments, EncodeArguments, argv=[
            "--model_name_or_path", str(out), "--encode_in_path", str(path), "--encoded_save_path",
            str(tmp_path / name), *extra]))

    full = encode(corpus, "full")
    small = encode(corpus, "small", "--embedding_dim", "8")
    assert (full.dim, small.dim, small.meta["full_dim"]) == (32, 8, 32)
    head = np.asarray(full.vectors())[:, :8]
    np.testing.assert_allclose(np.asarray(small.vectors()), head / np.linalg.norm(head, axis=1, keepdims=True),
                               atol=1e-6, rtol=0)
    encode(queries, "q8", "--encode_is_qry", "--embedding_dim", "8")
    proc = run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", str(tmp_path / "q8"),
                    "--passage_reps", str(tmp_path / "full"), "--depth", "5",
                    "--save_ranking_to", str(tmp_path / "x.run")], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and not (tmp_path / "x.run").exists()
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "dim=32" in line[0] and "dim=8" in line[0] and "--embedding_dim" in line[0], proc.stderr
    ok = run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", str(tmp_path / "q8"),
                  "--passage_reps", str(tmp_path / "small"), "--depth", "5", "--save_ranking_to", str(tmp_path / "ok.run")])
    assert ok.returncode == 0 and len((tmp_path / "ok.run").read_text().splitlines()) == 5
    bad = run_cmd(["python", "-m", "densir.driver.encode", "--model_name_or_path", str(out), "--encode_in_path",
                   str(corpus), "--encoded_save_path", str(tmp_path / "bad"), "--embedding_dim", "64"], check=False)
    assert bad.returncode != 0 and "error: --embedding_dim must be in [1, 32]" in bad.stderr and "Traceback" not in bad.stderr
