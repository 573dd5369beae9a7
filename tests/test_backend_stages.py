"""--backend / --quantize through the stages: encode, search, rerank and the Searcher, on a real SciFact
slice with the bundled all-MiniLM-L6-v2 (copied, so its exports cache in a temp dir).

The slice: 20 test queries, every passage judged for them, and random others up to 240 passages,
encoded at 256 tokens. Each backend's shards carry backend/quantize/backend_recipe; int8 vectors stay
within cosine 0.99 of torch fp32 and retrieve (nearly) the same top 10; search refuses torch queries
against int8 passages; a rerun with another backend refuses the complete shard; the second encode
reuses the cached export; the Searcher encodes queries with the passages' runtime; the re-rank stage
on ONNX fp32 ranks as torch does.
"""
from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
from conftest import run_cmd

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from densir import backends  # noqa: E402
from densir.embeddings import EmbeddingShard  # noqa: E402
from densir.io import InputError, read_run  # noqa: E402
from densir.retriever.arguments import EncodeArguments, ModelArguments  # noqa: E402
from densir.retriever.encode import encode_file  # noqa: E402

INT8 = [("onnx", "int8"), ("openvino", "int8")]


@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory, shared_data):
    d = tmp_path_factory.mktemp("slice")
    qrels = [line.split("\t") for line in (shared_data / "scifact/qrels/test.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:20]
    judged = {doc for q, doc, _ in qrels if q in qids}
    docs = [json.loads(line) for line in open(shared_data / "scifact/corpus.jsonl", encoding="utf-8")]
    others = [r for r in docs if r["_id"] not in judged]
    keep = [r for r in docs if r["_id"] in judged] + random.Random(0).sample(others, 240 - len(judged))
    (d / "corpus.jsonl").write_text("".join(json.dumps({"docid": r["_id"], "title": r["title"], "text": r["text"]})
                                            + "\n" for r in keep))
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in open(shared_data / "scifact/queries.jsonl")}
    (d / "queries.jsonl").write_text("".join(json.dumps({"query_id": q, "query": queries[q]}) + "\n" for q in qids))
    return d


@pytest.fixture(scope="module")
def model(minilm_copy) -> str:
    return minilm_copy


def _encode(model, src, name, backend="torch", quantize="none", query=False):
    args = EncodeArguments(encode_in_path=str(src), encoded_save_path=str(name), encode_is_qry=query,
                           p_max_len=256, q_max_len=64, per_device_eval_batch_size=32, backend=backend,
                           quantize=quantize)
    return encode_file(ModelArguments(model_name_or_path=model), args)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, model, scifact_slice):
    out = tmp_path_factory.mktemp("enc")
    result = {}
    for backend, quantize in [("torch", "none"), *INT8]:
        tag = f"{backend}-{quantize}"
        result[tag] = (_encode(model, scifact_slice / "corpus.jsonl", out / tag / "corpus", backend, quantize),
                       _encode(model, scifact_slice / "queries.jsonl", out / tag / "queries", backend, quantize,
                               query=True))
    return result


def _search(tmp_path, queries, passages, tag, check=True):
    out = tmp_path / f"{tag}.run"
    proc = run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", queries.name, "--passage_reps",
                    passages.name, "--depth", "10", "--save_ranking_to", str(out)], check=check)
    return (read_run(out) if proc.returncode == 0 else None), proc


@pytest.mark.parametrize("backend,quantize", INT8)
def test_int8_shards_match_torch_and_retrieve_the_same(shards, tmp_path, backend, quantize):
    corpus, queries = shards[f"{backend}-{quantize}"]
    ref_corpus, ref_queries = shards["torch-none"]
    assert corpus.meta["backend"] == backend and corpus.meta["quantize"] == quantize
    assert corpus.meta["backend_recipe"] == backends.DEFAULT_RECIPES[(backend, quantize)]
    assert ref_corpus.meta["backend"] == "torch" and ref_corpus.meta["backend_recipe"] == "torch-fp32"
    assert corpus.meta["model_fingerprint"] == ref_corpus.meta["model_fingerprint"]  # the checkpoint's
    assert corpus.ids() == ref_corpus.ids()
    for mine, ref in ((corpus, ref_corpus), (queries, ref_queries)):
        a, b = np.asarray(mine.vectors()), np.asarray(ref.vectors())
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() >= 0.99, (mine.name, cosine.min())
    run, _ = _search(tmp_path, queries, corpus, "int8")
    ref, _ = _search(tmp_path, ref_queries, ref_corpus, "torch")
    overlap = [len({d for d, _ in run[q]} & {d for d, _ in ref[q]}) / 10 for q in ref]
    firsts = sum(run[q][0][0] == ref[q][0][0] for q in ref)
    assert np.mean(overlap) >= 0.9 and min(overlap) >= 0.7 and firsts >= 18, (overlap, firsts)


def test_search_refuses_shards_of_another_backend(shards, tmp_path):
    corpus, _ = shards["openvino-int8"]
    _, torch_queries = shards["torch-none"]
    run, proc = _search(tmp_path, torch_queries, corpus, "mixed", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "field 'backend'" in last and "same backend and quantization" in last, last
    assert not (tmp_path / "mixed.run").exists()


def test_rerun_with_another_backend_refuses_the_complete_shard(shards, model, scifact_slice):
    corpus, _ = shards["onnx-int8"]
    with pytest.raises(InputError, match="backend: 'onnx' there, 'torch' now"):
        _encode(model, scifact_slice / "corpus.jsonl", corpus.name)
    assert EmbeddingShard.open(corpus.name).meta["backend"] == "onnx"  # untouched


def test_second_encode_reuses_the_export(model, scifact_slice, tmp_path, caplog, shards):
    with caplog.at_level(logging.INFO, logger="densir.backends"):
        _encode(model, scifact_slice / "queries.jsonl", tmp_path / "again", "openvino", "int8", query=True)
    assert "reusing cached export" in caplog.text and "exporting" not in caplog.text


def test_searcher_encodes_queries_with_the_passages_runtime(shards, model, scifact_slice):
    from densir.retriever.modeling import DenseEncoder
    from densir.search.searcher import Searcher

    corpus, queries = shards["openvino-int8"]
    searcher = Searcher(DenseEncoder.load(model), [corpus], q_max_len=64)
    assert searcher.encoder.runtime_info["recipe"] == corpus.meta["backend_recipe"]
    texts = [json.loads(line)["query"] for line in open(scifact_slice / "queries.jsonl")]
    mine, ref = searcher.encode_queries(texts), np.asarray(queries.vectors())
    cosine = (mine * ref).sum(1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() >= 0.9999, cosine.min()


def test_rerank_on_onnx_ranks_as_torch(reranker_dir, scifact_slice, shards, tmp_path):
    corpus, queries = shards["torch-none"]
    first, _ = _search(tmp_path, queries, corpus, "first")
    common = ["python", "-m", "densir.driver.rerank", "--model_name_or_path", str(reranker_dir), "--run",
              str(tmp_path / "first.run"), "--corpus", str(scifact_slice / "corpus.jsonl"), "--queries",
              str(scifact_slice / "queries.jsonl"), "--depth", "10", "--batch_size", "16"]
    run_cmd([*common, "--save_ranking_to", str(tmp_path / "torch.run")])
    run_cmd([*common, "--backend", "onnx", "--save_ranking_to", str(tmp_path / "onnx.run")])
    a, b = read_run(tmp_path / "torch.run"), read_run(tmp_path / "onnx.run")
    assert list(a) == list(b)
    for q in a:
        np.testing.assert_allclose([s for _, s in b[q]], [s for _, s in a[q]], atol=1e-4)
    proc = run_cmd([*common, "--backend", "onnx", "--bf16", "--save_ranking_to", str(tmp_path / "x.run")], check=False)
    assert proc.returncode == 1 and "runs in fp32 or int8" in proc.stderr and "Traceback" not in proc.stderr
