"""Cross-encoder re-ranker: sentence-transformers score equality, tokenization, losses, the
re-ranking driver (depth, order, query shards, merge, bad input) and training resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cmd

from densir.io import read_run
from densir.losses import (
    BinaryCrossEntropyLoss,
    LambdaLoss,
    ListwiseSoftmaxLoss,
)
from densir.reranker.modeling import CrossEncoderReranker
from densir.tokenization import tokenize_pairs

MAX_LEN = 48
LONG = "the protein binds the receptor and inhibits downstream signalling in tumour cells " * 12
PAIRS = [
    ("what inhibits signalling?", LONG),                          # passage truncated
    ("q", "short passage"),
    ("vitamin d deficiency and bone density in adults", "Vitamin D. Bone mineral density was lower."),
    ("word " * 60, "a passage that the long query leaves no room for"),  # query longer than max_len
    ("émigré naïve café?", "Ünïcödé tèxt — with punctuation; and numbers 3.14"),
]


# --------------------------------------------------------------------------- model
def test_saved_reranker_scores_equal_sentence_transformers(reranker_dir):
    st = pytest.importorskip("sentence_transformers")
    ce = st.CrossEncoder(str(reranker_dir))
    assert isinstance(ce.activation_fn, torch.nn.Identity)  # raw logits on both sides
    theirs = ce.predict(PAIRS, batch_size=3)
    ours = CrossEncoderReranker.load(str(reranker_dir))
    assert ours.max_len == MAX_LEN
    mine = ours.predict(PAIRS, batch_size=2)
    assert np.ptp(theirs) > 1e-2  # the scores differ, so equality means something
    np.testing.assert_allclose(mine, theirs, atol=1e-4)
    docs = [p for _, p in PAIRS]
    a, b = ours.rank("protein receptor", docs, top_k=3), ce.rank("protein receptor", docs, top_k=3)
    assert [h["corpus_id"] for h in a] == [h["corpus_id"] for h in b]
    np.testing.assert_allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-4)


def test_predict_is_batch_independent_and_autocasts(reranker_dir):
    r = CrossEncoderReranker.load(str(reranker_dir))
    one = r.predict(PAIRS, batch_size=1)
    np.testing.assert_allclose(r.predict(PAIRS, batch_size=64), one, atol=1e-5)
    assert r.predict([]).shape == (0,)
    bf16 = r.predict(PAIRS, batch_size=2, precision="bf16")
    assert bf16.dtype == np.float32 and np.abs(bf16 - one).max() < 0.1 * max(np.abs(one).max(), 1.0)


def test_load_keeps_encoder_weights_and_refuses_multi_label(tmp_path, minilm_path, tiny_bert_dir):
    from transformers import AutoModel, AutoModelForSequenceClassification

    r = CrossEncoderReranker.load(minilm_path)  # a sentence-transformers bi-encoder dir
    enc = AutoModel.from_pretrained(minilm_path)
    assert r.model.config.num_labels == 1
    assert torch.equal(r.model.bert.embeddings.word_embeddings.weight, enc.embeddings.word_embeddings.weight)
    assert torch.equal(r.model.bert.encoder.layer[5].output.dense.weight, enc.encoder.layer[5].output.dense.weight)
    three = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    three.save_pretrained(tmp_path / "nli")
    with pytest.raises(ValueError, match="3 labels"):
        CrossEncoderReranker.load(str(tmp_path / "nli"))


def test_pretokenized_pairs_match_strings(reranker_dir):
    tok = CrossEncoderReranker.load(str(reranker_dir)).tokenizer
    qs, ps = ["vitamin d and bone", "q"], ["bone density was lower in the deficient group", LONG]
    ids = lambda xs: [tok(x, add_special_tokens=False)["input_ids"] for x in xs]  # noqa: E731
    for max_len in (512, 24):
        a, b = tokenize_pairs(tok, qs, ps, max_len), tokenize_pairs(tok, ids(qs), ids(ps), max_len)
        assert set(a) == set(b)
        for k in a:
            assert torch.equal(a[k], b[k]), (max_len, k)
    assert tokenize_pairs(tok, qs, ps, 24)["input_ids"].shape[1] == 24
    # only the passage is cut: the query's tokens all survive
    first = tokenize_pairs(tok, qs, ps, 24)["input_ids"][0].tolist()
    assert first[1:1 + len(ids(qs)[0])] == ids(qs)[0]


# --------------------------------------------------------------------------- losses
def test_listwise_and_bce_are_their_formulas():
    scores = torch.tensor([[2.0, 1.0, -1.0], [0.3, 0.9, 0.1]])
    rel = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(ListwiseSoftmaxLoss()(scores, rel), F.cross_entropy(scores, torch.zeros(2, dtype=torch.long)))
    p = torch.sigmoid(scores)
    manual = -(rel * p.log() + (1 - rel) * (1 - p).log()).mean()
    assert torch.allclose(BinaryCrossEntropyLoss()(scores, rel), manual)
    assert torch.allclose(ListwiseSoftmaxLoss(temperature=0.5)(scores, rel), ListwiseSoftmaxLoss()(scores * 2, rel))


@pytest.mark.parametrize("weighting", LambdaLoss.SCHEMES)
def test_lambda_loss_gradients_prefer_swapping_a_misordered_pair(weighting):
    # ranked by score: negative (2.0) above the positive (1.0), then two negatives below it
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0]], requires_grad=True)
    rel = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    loss = LambdaLoss(weighting=weighting)(scores, rel)
    loss.backward()
    g = scores.grad[0]
    assert g[1] < 0  # gradient descent raises the positive
    assert g[0] > 0  # and lowers the negative ranked above it
    assert g[0] > g[2] >= 0 and g[0] > g[3] >= 0  # the mis-ordered negative is pushed hardest
    # one small step makes the pair swap cheaper, and the correct order costs less than the wrong one
    stepped = (scores - 0.5 * scores.grad).detach()
    assert LambdaLoss(weighting=weighting)(stepped, rel) < loss
    good = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    assert LambdaLoss(weighting=weighting)(good, rel) < LambdaLoss(weighting=weighting)(scores.detach(), rel)
    assert abs(g.sum().item()) < 1e-5  # pairwise: pushes balance out


# --------------------------------------------------------------------------- driver
@pytest.fixture(scope="module")
def tiny_collection(tmp_path_factory):
    d = tmp_path_factory.mktemp("collection")
    docs = {f"d{i}": (f"title {i}", f"text of document {i} about topic {i % 3}") for i in range(8)}
    (d / "corpus.jsonl").write_text("".join(json.dumps({"docid": k, "title": t, "text": x}) + "\n"
                                            for k, (t, x) in docs.items()))
    queries = {"q2": "topic 2", "q0": "topic 0", "q1": "document 1", "q3": "title 3"}
    (d / "queries.jsonl").write_text("".join(json.dumps({"query_id": k, "query": v}) + "\n" for k, v in queries.items()))
    lines = [f"{q} Q0 d{(j + n) % 8} {j + 1} {10 - j} bm25\n" for n, q in enumerate(queries) for j in range(5)]
    (d / "run.trec").write_text("".join(lines))
    return d, docs, queries


def _args(reranker_dir, d, out, **kw):
    from densir.reranker.arguments import RerankArguments

    return RerankArguments(model_name_or_path=str(reranker_dir), run=str(d / "run.trec"), corpus=str(d / "corpus.jsonl"),
                           queries=str(d / "queries.jsonl"), save_ranking_to=str(out), depth=3, batch_size=4, **kw)


def test_rerank_depth_order_scores_and_query_shards(tmp_path, reranker_dir, tiny_collection):
    from densir.formats import passage_text
    from densir.reranker.rerank import run_rerank

    d, docs, queries = tiny_collection
    out = run_rerank(_args(reranker_dir, d, tmp_path / "all.run"))
    run, before = read_run(out), read_run(d / "run.trec")
    assert list(run) == list(before)  # the input run's query order
    r = CrossEncoderReranker.load(str(reranker_dir))
    for qid, hits in run.items():
        top3 = [doc for doc, _ in before[qid][:3]]
        assert sorted(doc for doc, _ in hits) == sorted(top3)  # exactly the top-depth hits, re-ordered
        expect = r.predict([(queries[qid], passage_text(*docs[doc])) for doc in top3])
        got = dict(hits)
        np.testing.assert_allclose([got[doc] for doc in top3], expect, atol=2e-6)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    # three query shards (of 4 queries: ranges of 1, 1, 2), merged, give the same file
    for i in range(3):
        run_rerank(_args(reranker_dir, d, tmp_path / "sh.run", query_shard=i, num_query_shards=3))
    shards = [tmp_path / f"sh.run.qshard-{i}-of-3" for i in range(3)]
    assert [len(read_run(p)) for p in shards] == [1, 1, 2]
    run_rerank(_args(reranker_dir, d, tmp_path / "sh.run", num_query_shards=3, merge_query_shards=True))
    # the same run as the unsharded one: queries, hits and order; scores to the float noise of other
    # batch shapes (a 6-decimal score can round the other way: 1.776623 vs 1.776624 on an AMX CPU)
    merged, whole = read_run(tmp_path / "sh.run"), read_run(out)
    assert list(merged) == list(whole)
    for qid, hits in whole.items():
        assert [doc for doc, _ in merged[qid]] == [doc for doc, _ in hits], qid
        np.testing.assert_allclose([s for _, s in merged[qid]], [s for _, s in hits], atol=2e-6)
    shards[1].unlink()
    with pytest.raises(FileNotFoundError, match="qshard-1-of-3"):
        run_rerank(_args(reranker_dir, d, tmp_path / "sh2.run", num_query_shards=3, merge_query_shards=True))
    assert not (tmp_path / "sh2.run").exists()


def test_rerank_interpolate_fuses_with_the_first_stage(tmp_path, reranker_dir, tiny_collection):
    from densir.reranker.rerank import run_rerank

    d, _, _ = tiny_collection
    before = read_run(d / "run.trec")
    ce = read_run(run_rerank(_args(reranker_dir, d, tmp_path / "ce.run")))
    # alpha 1: the first stage's own top-3 order (its z-scores); alpha 0: the cross-encoder's order
    first = read_run(run_rerank(_args(reranker_dir, d, tmp_path / "a1.run", interpolate=1.0)))
    zero = read_run(run_rerank(_args(reranker_dir, d, tmp_path / "a0.run", interpolate=0.0)))
    for qid in before:
        assert [doc for doc, _ in first[qid]] == [doc for doc, _ in before[qid][:3]]
        assert [doc for doc, _ in zero[qid]] == [doc for doc, _ in ce[qid]]
    half = read_run(run_rerank(_args(reranker_dir, d, tmp_path / "a5.run", interpolate=0.5)))
    for qid, hits in half.items():
        z1, z0 = dict(first[qid]), dict(zero[qid])
        for doc, s in hits:
            assert abs(s - 0.5 * (z1[doc] + z0[doc])) < 2e-6
    with pytest.raises(ValueError, match=r"--interpolate must be in \[0, 1\]"):
        run_rerank(_args(reranker_dir, d, tmp_path / "bad.run", interpolate=1.5))


def test_doc_missing_from_corpus_names_run_file_and_line(tmp_path, reranker_dir, tiny_collection):
    d, _, _ = tiny_collection
    bad = tmp_path / "bad.run"
    lines = (d / "run.trec").read_text().splitlines(keepends=True)
    lines[6] = lines[6].replace(lines[6].split()[2], "ghost-doc")  # line 7
    bad.write_text("".join(lines))
    out = tmp_path / "out.run"
    proc = run_cmd(["python", "-m", "densir.driver.rerank",
                    "--model_name_or_path", str(reranker_dir), "--run", str(bad), "--corpus", str(d / "corpus.jsonl"),
                    "--queries", str(d / "queries.jsonl"), "--depth", "5", "--save_ranking_to", str(out)], check=False)
    assert proc.returncode == 1
    assert f"{bad}:7: field 'docid': docid 'ghost-doc' is not in the corpus" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_train_reranker_resume_gives_the_uninterrupted_model(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    from densir.driver.train_reranker import main

    groups = tmp_path / "g.jsonl"
    groups.write_text("".join(json.dumps({
        "query_id": str(i), "query": f"query about topic {i}",
        "positive_passages": [{"docid": f"p{i}", "title": "", "text": f"topic {i} is discussed here"}],
        "negative_passages": [{"docid": f"n{i}-{j}", "title": "", "text": f"unrelated text {j}"} for j in range(5)]})
        + "\n" for i in range(6)))

    def train(out, steps, resume=None):
        argv = ["--model_name_or_path", tiny_bert_dir, "--train_dir", str(groups), "--output_dir", str(out),
                "--loss", "lambda", "--train_n_passages", "3", "--max_len", "32", "--per_device_train_batch_size", "2",
                "--learning_rate", "1e-3", "--max_steps", str(steps), "--save_steps", "2", "--seed", "5",
                "--logging_steps", "1", "--lr_scheduler_type", "constant"]  # step k's weights do not depend on max_steps
        return main(argv + (["--resume_from_checkpoint", resume] if resume else []))

    full = train(tmp_path / "full", 4)
    assert full["global_step"] == 4 and full["loss"] == "lambda"
    # the same seed draws the same fresh head: a second run gives the same checkpoint
    train(tmp_path / "again", 2)
    a = load_file(tmp_path / "full" / "checkpoint-2" / "model.safetensors")
    b = load_file(tmp_path / "again" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "cut").mkdir()
    import shutil
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "cut" / "checkpoint-2")
    resumed = train(tmp_path / "cut", 4, resume="auto")
    assert resumed["resumed_from"].endswith("checkpoint-2")
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "densir_reranker.json").exists()


def test_train_reranker_mnrl_with_grad_cache_trains_as_without(tmp_path, tiny_bert_dir):
    """--loss mnrl (in-batch negatives) through the trainer: with --grad_cache and one chunk holding every
    pair the weights equal those trained without it (the same forwards, the same dropout); with small
    chunks (3 pairs) it trains too (exactness per chunk: tests/test_reranker_losses.py)."""
    from safetensors.torch import load_file

    from densir.driver.train_reranker import main

    groups = tmp_path / "g.jsonl"
    groups.write_text("".join(json.dumps({
        "query_id": str(i), "query": f"query about topic {i}",
        "positive_passages": [{"docid": f"p{i}", "title": "", "text": f"topic {i} is discussed here"}],
        "negative_passages": [{"docid": f"n{i}-{j}", "title": "", "text": f"unrelated text {j} of {i}"}
                              for j in range(3)]}) + "\n" for i in range(6)))

    def train(out, *extra):
        return main(["--model_name_or_path", tiny_bert_dir, "--train_dir", str(groups), "--output_dir", str(out),
                     "--loss", "mnrl", "--mnrl_num_negatives", "3", "--train_n_passages", "2", "--max_len", "32",
                     "--per_device_train_batch_size", "3", "--learning_rate", "1e-3", "--max_steps", "2",
                     "--save_strategy", "no", "--seed", "5", "--logging_steps", "1", *extra])

    plain = train(tmp_path / "plain")
    one_chunk = train(tmp_path / "gc1", "--grad_cache", "--gc_pair_chunk_size", "64")
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "gc1" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert abs(plain["train_loss"] - one_chunk["train_loss"]) < 1e-5
    small = train(tmp_path / "gc3", "--grad_cache", "--gc_pair_chunk_size", "3")
    assert small["global_step"] == 2 and np.isfinite(small["train_loss"])
