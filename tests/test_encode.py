"""Encoding stage on the tiny random BERT: shard files, order, sharding, torchrun pieces, rerun, bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import run_cmd

from densir.embeddings import EmbeddingShard, resolve_shards
from densir.formats import passage_text, read_corpus
from densir.io import InputError, write_jsonl
from densir.retriever.arguments import EncodeArguments, ModelArguments
from densir.retriever.encode import encode_file, resolve_max_len
from densir.retriever.modeling import DenseEncoder
from densir.tokenization import tokenize_batch


@pytest.fixture
def corpus(tmp_path):
    """37 passages of varied lengths, ids as strings that are not integers."""
    rng = np.random.default_rng(0)
    words = "retrieval dense passage query vector index shard model token batch".split()
    recs = [{"docid": f"d-{i}", "title": f"title {i}" if i % 3 else "",
             "text": " ".join(rng.choice(words, size=int(rng.integers(1, 60))))} for i in range(37)]
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, recs)
    return path


def _args(path, save, **kw):
    kw.setdefault("per_device_eval_batch_size", 8)
    kw.setdefault("encode_chunk_size", 10)  # several chunks, so chunking and order are exercised
    return EncodeArguments(encode_in_path=str(path), encoded_save_path=str(save), **kw)


def _reference(model_dir, texts, max_len, query=False):
    """One text at a time, no sorting, no padding: what the vectors must equal."""
    enc = DenseEncoder.load(model_dir).eval()
    fn = enc.encode_query if query else enc.encode_passage
    with torch.inference_mode():
        return np.concatenate([fn(tokenize_batch(enc.tokenizer, [t], max_len)).numpy() for t in texts])


def test_encode_writes_complete_shard_in_input_order(tiny_bert_dir, corpus, tmp_path):
    shard = encode_file(ModelArguments(model_name_or_path=tiny_bert_dir), _args(corpus, tmp_path / "emb/corpus"))
    for suffix in (".npy", ".ids", ".json"):
        assert (tmp_path / f"emb/corpus{suffix}").exists()
    assert not list((tmp_path / "emb").glob("*.tmp-*"))
    meta = json.loads((tmp_path / "emb/corpus.json").read_text())
    assert meta["kind"] == "passage" and meta["dim"] == 32 and meta["count"] == 37 and meta["dtype"] == "float32"
    assert meta["max_len"] == 128 and meta["pooling"] == "cls" and meta["precision"] == "fp32"
    docs = read_corpus(corpus)
    assert shard.ids() == list(docs)  # rows in corpus order although batches were length-sorted
    ref = _reference(tiny_bert_dir, [passage_text(*docs[d]) for d in docs], 128)
    np.testing.assert_allclose(shard.vectors(), ref, atol=1e-5)


def test_rerun_skips_complete_shard_and_refuses_other_settings(tiny_bert_dir, corpus, tmp_path, caplog):
    margs = ModelArguments(model_name_or_path=tiny_bert_dir)
    encode_file(margs, _args(corpus, tmp_path / "c"))
    mtime = os.stat(tmp_path / "c.npy").st_mtime_ns
    caplog.set_level("INFO")
    encode_file(margs, _args(corpus, tmp_path / "c"))
    assert os.stat(tmp_path / "c.npy").st_mtime_ns == mtime
    assert "is complete" in caplog.text and "skipping" in caplog.text
    with pytest.raises(InputError, match=r"c\.json.*other settings.*max_len"):
        encode_file(margs, _args(corpus, tmp_path / "c", p_max_len=16))


def test_num_shards_split_the_corpus(tiny_bert_dir, corpus, tmp_path):
    margs = ModelArguments(model_name_or_path=tiny_bert_dir)
    whole = encode_file(margs, _args(corpus, tmp_path / "one/corpus"))
    for i in range(3):
        encode_file(margs, _args(corpus, tmp_path / "three/corpus", shard_index=i, num_shards=3))
    shards = resolve_shards(str(tmp_path / "three/corpus.*"), kind="passage")
    assert [os.path.basename(s.name) for s in shards] == ["corpus.0", "corpus.1", "corpus.2"]
    ids = [i for s in shards for i in s.ids()]
    assert sorted(ids) == sorted(whole.ids()) and len(ids) == 37
    by_id = dict(zip(whole.ids(), whole.vectors()))
    for s in shards:
        np.testing.assert_allclose(s.vectors(), np.stack([by_id[i] for i in s.ids()]), atol=1e-5)
    # a pattern missing a shard, or the wrong expected count, is refused
    os.remove(tmp_path / "three/corpus.1.json")
    with pytest.raises(InputError, match="half-written"):
        resolve_shards(str(tmp_path / "three/corpus.*"))
    os.remove(tmp_path / "three/corpus.1.npy")
    with pytest.raises(InputError, match=r"shard\(s\) \[1\] are missing"):
        resolve_shards(str(tmp_path / "three/corpus.*"))
    with pytest.raises(InputError, match="expected 3"):
        resolve_shards(str(tmp_path / "three/corpus.*"), expected_shards=3)


def test_torchrun_ranks_write_pieces_that_reassemble(tiny_bert_dir, corpus, tmp_path, monkeypatch):
    margs = ModelArguments(model_name_or_path=tiny_bert_dir)
    for rank in range(2):  # what torchrun --nproc_per_node 2 sets for each process
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        encode_file(margs, _args(corpus, tmp_path / "corpus", shard_index=1, num_shards=2))
    assert (tmp_path / "corpus.1.rank0-of-2.json").exists() and (tmp_path / "corpus.1.rank1-of-2.json").exists()
    pieces = resolve_shards(str(tmp_path / "corpus.1"))  # the shard name finds its pieces
    ids = [i for p in pieces for i in p.ids()]
    assert sorted(ids) == sorted(f"d-{i}" for i in range(1, 37, 2))
    os.remove(tmp_path / "corpus.1.rank1-of-2.json")
    os.remove(tmp_path / "corpus.1.rank1-of-2.npy")
    with pytest.raises(InputError, match="piece is missing"):
        resolve_shards(str(tmp_path / "corpus.1"))


def test_queries_and_duplicate_query_ids(tiny_bert_dir, tmp_path):
    good = tmp_path / "q.jsonl"
    write_jsonl(good, [{"query_id": 7, "query": "what is dense retrieval"}, {"query_id": "x", "query": "why"}])
    shard = encode_file(ModelArguments(model_name_or_path=tiny_bert_dir), _args(good, tmp_path / "q", encode_is_qry=True))
    assert shard.meta["kind"] == "query" and shard.meta["max_len"] == 32 and shard.ids() == ["7", "x"]
    bad = tmp_path / "dup.jsonl"
    write_jsonl(bad, [{"query_id": "1", "query": "a"}, {"query_id": "2", "query": "b"}, {"query_id": "1", "query": "c"}])
    with pytest.raises(InputError, match=r"dup\.jsonl:3.*duplicate query_id '1'"):
        encode_file(ModelArguments(model_name_or_path=tiny_bert_dir), _args(bad, tmp_path / "dq", encode_is_qry=True))
    assert not list(tmp_path.glob("dq*"))  # nothing half-written left behind


@pytest.mark.slow
def test_cli_bf16_and_fp16_storage(tiny_bert_dir, corpus, tmp_path):
    """The CLI end to end, in bf16 autocast (CPU) with float16 storage: close to fp32."""
    run_cmd(["python", "-m", "densir.driver.encode", "--model_name_or_path", tiny_bert_dir, "--encode_in_path",
             str(corpus), "--encoded_save_path", str(tmp_path / "f32"), "--per_device_eval_batch_size", "16"])
    proc = run_cmd(["python", "-m", "densir.driver.encode", "--model_name_or_path", tiny_bert_dir,
                    "--encode_in_path", str(corpus), "--encoded_save_path", str(tmp_path / "b16"), "--bf16",
                    "--embedding_dtype", "float16", "--pooling", "mean", "--normalize", "true", "--p_max_len", "64"])
    assert "37 x 32 float16" in proc.stdout
    b16 = EmbeddingShard.open(tmp_path / "b16")
    assert b16.meta["precision"] == "bf16" and b16.meta["pooling"] == "mean" and b16.meta["normalize"] is True
    assert b16.vectors().dtype == np.float16
    norms = np.linalg.norm(b16.vectors().astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-2)


def test_max_len_resolution():
    assert resolve_max_len("query", None, None) == 32 and resolve_max_len("passage", None, None) == 128
    assert resolve_max_len("passage", None, 256) == 256  # a sentence-transformers checkpoint's max_seq_length
    assert resolve_max_len("passage", 64, 256) == 64  # an explicit flag wins


@pytest.mark.slow
def test_encode_memory_is_bounded(tiny_bert_dir, tmp_path):
    """12k synthetic passages in chunks of 3k: peak RSS far below the 2 GB target.

    benchmarks/memory_check.py encode runs the full-size case (200k passages) once.
    """
    import sys

    from conftest import REPO

    proc = run_cmd([sys.executable, str(REPO / "benchmarks" / "memory_check.py"), "encode", "--workdir",
                    str(tmp_path), "--passages", "12000", "--chunk", "3000", "--model", tiny_bert_dir], timeout=900)
    assert "12000 x 32 float32" in proc.stdout
    peak_mb = float(proc.stdout.strip().splitlines()[-1].split("peak_rss_mb=")[1].split()[0])
    assert peak_mb < 2048, proc.stdout


def test_token_budget_batches_bound_padded_tokens_and_keep_the_vectors(tiny_bert_dir, corpus, tmp_path):
    """--max_tokens_per_batch: every batch holds at most that many padded tokens (one text longer
    than the budget alone), batches are longest first, and the vectors are those of plain batches."""
    from densir.tokenization import length_batches, token_lengths

    enc = DenseEncoder.load(tiny_bert_dir)
    texts = [passage_text(*v) for v in read_corpus(corpus).values()]
    lengths = token_lengths(enc.tokenizer, texts, 128)
    assert lengths == [len(tokenize_batch(enc.tokenizer, [t], 128)["input_ids"][0]) for t in texts]
    batches = length_batches(lengths, 16, max_tokens=120)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 16 and (len(b) * longest <= 120 or len(b) == 1)
        assert lengths[b[0]] == longest
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True) and len(batches) > -(-len(texts) // 16)
    plain = encode_file(ModelArguments(model_name_or_path=tiny_bert_dir), _args(corpus, tmp_path / "a/c"))
    capped = encode_file(ModelArguments(model_name_or_path=tiny_bert_dir),
                         _args(corpus, tmp_path / "b/c", max_tokens_per_batch=120, per_device_eval_batch_size=16))
    assert capped.ids() == plain.ids()
    np.testing.assert_allclose(capped.vectors(), plain.vectors(), atol=1e-5)


def test_tokenize_once_then_pad_equals_tokenize_batch(tiny_bert_dir):
    """encode_texts tokenizes a chunk once (tokenize_each) and pads each batch (pad_batch): the same
    tensors as tokenize_batch of the batch, for strings (with a prefix) and pre-tokenized ids."""
    import torch
    from transformers import AutoTokenizer

    from densir.tokenization import pad_batch, token_lengths, tokenize_batch, tokenize_each

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = ["a short one", "a much longer passage about cells and the proteins in them " * 4, "mid length text here"]
    pre = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    for items, prefix in ((texts, "passage: "), (pre, "")):
        features = tokenize_each(tok, items, 16, prefix)
        assert [len(f["input_ids"]) for f in features] == token_lengths(tok, items, 16, prefix)
        for idx in ([0, 1, 2], [2, 0]):
            want = tokenize_batch(tok, [items[i] for i in idx], 16, prefix)
            got = pad_batch(tok, [features[i] for i in idx])
            assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
