"""--dataset_name for encode and rerank: Tevatron's corpus and query sets, named by hub id and read
offline from a Hugging Face cache laid out as the hub's snapshot (here built from real SciFact
records, as parquet with integer docids, as hub datasets often store them), give exactly what the
same records as JSONL files give."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cmd
from hub_cache import make_hub_cache

from densir.formats import HFDataset, iter_corpus, iter_queries
from densir.io import InputError, read_run

CORPUS_ID, QUERIES_ID = "Tevatron/scifact-corpus", "Tevatron/scifact"


@pytest.fixture(scope="module")
def collection(tmp_path_factory, shared_data):
    """60 real SciFact passages and 12 real queries: JSONL files, the same rows in a hub cache (the
    corpus as Tevatron's corpus sets, split train; the queries as Tevatron's query sets, split dev,
    with their extra columns), and a first-stage run of 8 passages per query."""
    import datasets

    d = tmp_path_factory.mktemp("hf")
    docs = [json.loads(line) for line, _ in zip(open(shared_data / "scifact" / "corpus.jsonl"), range(60))]
    corpus = [{"docid": r["_id"], "title": r.get("title", ""), "text": r["text"]} for r in docs]
    queries = [{"query_id": json.loads(line)["_id"], "query": json.loads(line)["text"]}
               for line, _ in zip(open(shared_data / "scifact" / "queries.jsonl"), range(12))]
    for name, rows in (("corpus", corpus), ("queries", queries)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = {n: d / "src" / n / "data" for n in ("corpus", "queries")}
    for p in src.values():
        p.mkdir(parents=True)
    datasets.Dataset.from_list([dict(r, docid=int(r["docid"])) for r in corpus]).to_parquet(
        src["corpus"] / "train-00000-of-00001.parquet")
    datasets.Dataset.from_list([dict(q, positive_passages=[corpus[i]], negative_passages=[corpus[i + 1]])
                                for i, q in enumerate(queries)]).to_parquet(src["queries"] / "dev-00000-of-00001.parquet")
    cache = d / "home" / "hub"
    make_hub_cache(d, CORPUS_ID, src["corpus"].parent, cache_dir=cache, repo_type="dataset")
    make_hub_cache(d, QUERIES_ID, src["queries"].parent, cache_dir=cache, repo_type="dataset")
    (d / "run.trec").write_text("".join(f"{q['query_id']} Q0 {corpus[(7 * n + j) % 60]['docid']} {j + 1} {8 - j} bm25\n"
                                        for n, q in enumerate(queries) for j in range(8)))
    return d


@pytest.fixture
def offline_hub(collection, monkeypatch):
    """HF_HOME at the collection's cache, offline: only the cache can answer."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(collection / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(collection / "home" / "hub"))
    return {"HF_HOME": str(collection / "home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(collection / "home" / "datasets")}


def test_readers_give_the_jsonl_records(collection, offline_hub):
    assert list(iter_corpus(HFDataset(CORPUS_ID))) == list(iter_corpus(collection / "corpus.jsonl"))
    assert list(iter_queries(HFDataset(QUERIES_ID, split="dev"))) == list(iter_queries(collection / "queries.jsonl"))


def test_encode_dataset_name_equals_encode_in_path(collection, offline_hub, tiny_bert_dir, tmp_path):
    common = ["--model_name_or_path", tiny_bert_dir, "--per_device_eval_batch_size", "16", "--p_max_len", "64"]
    out = {}
    for tag, source in (("file", ["--encode_in_path", str(collection / "corpus.jsonl")]),
                        ("hub", ["--dataset_name", CORPUS_ID]),
                        ("file-q", ["--encode_in_path", str(collection / "queries.jsonl"), "--encode_is_qry"]),
                        ("hub-q", ["--dataset_name", QUERIES_ID, "--dataset_split", "dev", "--encode_is_qry"])):
        out[tag] = tmp_path / tag / "emb"
        run_cmd(["python", "-m", "densir.driver.encode", *common, *source, "--encoded_save_path", str(out[tag])],
                env=offline_hub)
    for a, b in (("file", "hub"), ("file-q", "hub-q")):
        assert (out[a].with_suffix(".ids").read_text() == out[b].with_suffix(".ids").read_text())
        np.testing.assert_array_equal(np.load(f"{out[a]}.npy"), np.load(f"{out[b]}.npy"))
    meta = json.loads(out["hub"].with_suffix(".json").read_text())
    assert meta["source"] == f"{CORPUS_ID} (split train)" and meta["count"] == 60


def test_rerank_dataset_names_equal_the_files(collection, offline_hub, reranker_dir, tmp_path):
    common = ["--model_name_or_path", str(reranker_dir), "--run", str(collection / "run.trec"), "--depth", "5",
              "--batch_size", "8"]
    run_cmd(["python", "-m", "densir.driver.rerank", *common, "--corpus", str(collection / "corpus.jsonl"),
             "--queries", str(collection / "queries.jsonl"), "--save_ranking_to", str(tmp_path / "file.run")],
            env=offline_hub)
    run_cmd(["python", "-m", "densir.driver.rerank", *common, "--dataset_name", CORPUS_ID,
             "--query_dataset_name", QUERIES_ID, "--save_ranking_to", str(tmp_path / "hub.run")], env=offline_hub)
    assert (tmp_path / "file.run").read_text() == (tmp_path / "hub.run").read_text()
    assert len(read_run(tmp_path / "hub.run")) == 12


def test_bad_datasets_are_one_line(collection, offline_hub, tiny_bert_dir, tmp_path):
    with pytest.raises(InputError, match=r"Tevatron/nothere \(split train\): cannot load the dataset"):
        HFDataset("Tevatron/nothere").load()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"docid": "a", "text": "x"}\n{"docid": "b", "title": "no text"}\n')
    with pytest.raises(InputError, match=r"\(split train\):2: field 'text'"):
        list(iter_corpus(HFDataset(str(bad))))
    proc = run_cmd(["python", "-m", "densir.driver.encode", "--model_name_or_path", tiny_bert_dir, "--dataset_name",
                    str(bad), "--encoded_save_path", str(tmp_path / "e")], env=offline_hub, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad} (split train):2: field 'text'")
    assert not (tmp_path / "e.json").exists()
    proc = run_cmd(["python", "-m", "densir.driver.encode", "--model_name_or_path", tiny_bert_dir, "--dataset_name",
                    CORPUS_ID, "--encode_in_path", str(collection / "corpus.jsonl"), "--encoded_save_path",
                    str(tmp_path / "e")], env=offline_hub, check=False)
    assert proc.returncode == 1 and "give one input" in proc.stderr and "Traceback" not in proc.stderr
