"""FAISS search over embedding shards: exactness against numpy, sharding, index types, bad shards."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_cmd

from densir.embeddings import EmbeddingShard, resolve_shards, write_shard
from densir.io import InputError, read_run
from densir.search.faiss_index import search, search_to_run

META = {"model": "m", "model_fingerprint": "f00", "pooling": "mean", "normalize": True, "max_len": 8}
DIM = 16


def _vectors(n, seed):
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def shards(tmp_path):
    """300 passages split round-robin into 4 shards, the same passages as one shard, and 20 queries."""
    docs = _vectors(300, 1)
    ids = [f"doc{i}" for i in range(300)]
    write_shard(tmp_path / "one/corpus", ids, docs, dict(META, kind="passage"))
    for s in range(4):
        write_shard(tmp_path / f"four/corpus.{s}", ids[s::4], docs[s::4],
                    dict(META, kind="passage", shard_index=s, num_shards=4))
    queries = _vectors(20, 2)
    write_shard(tmp_path / "queries", [f"q{i}" for i in range(20)], queries, dict(META, kind="query"))
    return tmp_path, docs, ids, queries


def _numpy_topk(queries, docs, ids, k):
    scores = queries @ docs.T
    out = {}
    for i, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")[:k]
        out[f"q{i}"] = [ids[j] for j in order]
    return out


def test_flat_search_is_exact_and_blocking_changes_nothing(shards):
    tmp, docs, ids, queries = shards
    expected = _numpy_topk(queries, docs, ids, 10)
    q = resolve_shards(tmp / "queries", kind="query")
    for kwargs in ({}, {"block_rows": 7, "batch_size": 3}):
        got = dict(search(q, resolve_shards(tmp / "one/corpus"), depth=10, **kwargs))
        assert {qid: [d for d, _ in hits] for qid, hits in got.items()} == expected
        np.testing.assert_allclose(got["q0"][0][1], float(queries[0] @ docs[ids.index(got["q0"][0][0])]), atol=1e-6)
    four = dict(search(q, resolve_shards(str(tmp / "four/corpus.*"), expected_shards=4), depth=10))
    assert four == got


def test_one_shard_equals_four_shards_plus_reducer_cli(shards):
    """Per-shard search jobs (a SLURM array) + the reducer == one search over all shards."""
    tmp, *_ = shards
    run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", str(tmp / "queries"), "--passage_reps",
             str(tmp / "one/corpus"), "--depth", "50", "--save_ranking_to", str(tmp / "one.run")])
    for s in range(4):
        search_to_run(str(tmp / "queries"), str(tmp / f"four/corpus.{s}"), tmp / f"runs/shard.{s}.run", depth=50)
    run_cmd(["python", "-m", "densir.faiss_retriever.reducer", "--runs", str(tmp / "runs/shard.*.run"),
             "--num_shards", "4", "--depth", "50", "--save_ranking_to", str(tmp / "merged.run")])
    assert (tmp / "one.run").read_text() == (tmp / "merged.run").read_text()
    proc = run_cmd(["python", "-m", "densir.faiss_retriever.reducer", "--runs", str(tmp / "runs/shard.*.run"),
                    "--num_shards", "5", "--depth", "50", "--save_ranking_to", str(tmp / "bad.run")], check=False)
    assert proc.returncode == 1 and not (tmp / "bad.run").exists()
    assert "error: --num_shards: " in proc.stderr and "matched 4 run file(s), expected 5" in proc.stderr


@pytest.mark.parametrize("factory,kwargs,min_overlap", [
    ("Flat", {"fp16_storage": True}, 0.95),
    ("HNSW32", {}, 0.8),
    ("IVF8,Flat", {"nprobe": 8}, 0.99),  # all 8 cells probed: exact
])
def test_other_indexes(shards, factory, kwargs, min_overlap):
    tmp, docs, ids, queries = shards
    expected = _numpy_topk(queries, docs, ids, 10)
    got = dict(search(resolve_shards(tmp / "queries"), resolve_shards(tmp / "one/corpus"), depth=10,
                      index_factory=factory, use_gpu=False, **kwargs))
    overlap = np.mean([len(set(expected[q]) & {d for d, _ in got[q]}) / 10 for q in expected])
    assert overlap >= min_overlap


def test_refuses_shards_of_another_model(shards):
    tmp, docs, ids, _ = shards
    q = resolve_shards(tmp / "queries")
    write_shard(tmp / "other/corpus", ids, docs, dict(META, kind="passage", model_fingerprint="bad", model="other"))
    with pytest.raises(InputError, match=r"other/corpus\.json.*model_fingerprint='bad'.*same model"):
        list(search(q, resolve_shards(tmp / "other/corpus"), depth=5))
    write_shard(tmp / "wide/corpus", ids, np.zeros((300, 8), np.float32), dict(META, kind="passage"))
    with pytest.raises(InputError, match=r"wide/corpus\.json.*dim=8.*does not match dim=16"):
        list(search(q, resolve_shards(tmp / "wide/corpus"), depth=5))
    # shards from other tools carry no fingerprint: then the model names must agree
    plain = {k: v for k, v in META.items() if k != "model_fingerprint"}
    write_shard(tmp / "nofp/q", ["q0"], docs[:1], dict(plain, kind="query"))
    write_shard(tmp / "nofp/p", ids, docs, dict(plain, kind="passage", model="another/model"))
    with pytest.raises(InputError, match=r"nofp/p\.json.*model='another/model'"):
        list(search(resolve_shards(tmp / "nofp/q"), resolve_shards(tmp / "nofp/p"), depth=5))
    with pytest.raises(InputError, match="is a query shard, expected passage"):
        search_to_run(str(tmp / "queries"), str(tmp / "queries"), tmp / "x.run", depth=5)


def test_refuses_half_written_and_damaged_shards(shards):
    tmp, *_ = shards
    os.remove(tmp / "four/corpus.2.json")  # as if the encode job died before its last rename
    with pytest.raises(InputError, match=r"four/corpus\.2\.npy.*half-written"):
        resolve_shards(str(tmp / "four/corpus.*"), expected_shards=4)
    with pytest.raises(InputError, match="half-written"):
        EmbeddingShard.open(tmp / "four/corpus.2")
    with open(tmp / "four/corpus.3.ids", "a") as f:
        f.write("extra\n")
    with pytest.raises(InputError, match=r"corpus\.3\.ids.*76 ids"):
        EmbeddingShard.open(tmp / "four/corpus.3").ids()
    proc = run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", str(tmp / "queries"),
                    "--passage_reps", str(tmp / "four/corpus.*"), "--num_passage_shards", "4", "--depth", "5",
                    "--save_ranking_to", str(tmp / "x.run")], check=False)
    assert proc.returncode == 1 and "half-written" in proc.stderr and not (tmp / "x.run").exists()


def test_depth_larger_than_corpus(shards):
    tmp, *_ = shards
    run = dict(search(resolve_shards(tmp / "queries"), resolve_shards(tmp / "four/corpus.0"), depth=1000))
    assert all(len(hits) == 75 for hits in run.values())
    search_to_run(str(tmp / "queries"), str(tmp / "four/corpus.0"), tmp / "r.run", depth=1000)
    assert read_run(tmp / "r.run")["q3"] == run["q3"]


def test_tie_at_the_depth_cut_is_broken_by_docid_everywhere(tmp_path):
    """10 identical passages straddle the depth cut: 1 shard and 4 shards + reducer still agree."""
    from densir.search.shard_runs import reduce_shard_runs

    docs = _vectors(40, 3)
    docs[5:15] = docs[4]  # a duplicated passage
    ids = [f"d{i:02d}" for i in range(40)][::-1]
    query = docs[4:5] + 0.01 * _vectors(1, 4)
    write_shard(tmp_path / "q", ["q"], query, dict(META, kind="query"))
    write_shard(tmp_path / "one", ids, docs, dict(META, kind="passage"))
    for s in range(4):
        write_shard(tmp_path / f"p.{s}", ids[s::4], docs[s::4], dict(META, kind="passage", shard_index=s, num_shards=4))
        search_to_run(str(tmp_path / "q"), str(tmp_path / f"p.{s}"), tmp_path / f"r.{s}.run", depth=6)
    search_to_run(str(tmp_path / "q"), str(tmp_path / "one"), tmp_path / "one.run", depth=6)
    reduce_shard_runs([str(tmp_path / "r.*.run")], tmp_path / "merged.run", depth=6, num_shards=4)
    assert (tmp_path / "one.run").read_text() == (tmp_path / "merged.run").read_text()
    hits = read_run(tmp_path / "one.run")["q"]
    assert len({s for _, s in hits}) == 1 and [d for d, _ in hits] == sorted(d for d, _ in hits)
