"""FAISS paths of the GPU machines, run on CPU: sharded sub-indexes (as on several GPUs), nprobe,
depth past the GPU limit, --use_gpu without a GPU, saved ANN indexes."""
from __future__ import annotations

import json
import logging
import os

import faiss
import numpy as np
import pytest
from conftest import run_cmd
from test_search import DIM, META, _vectors  # noqa: E402  (one synthetic-shard helper for both search tests)

from densir.embeddings import resolve_shards, write_shard
from densir.io import InputError, ParameterError
from densir.search import faiss_index
from densir.search.faiss_index import (
    CPU,
    GPU_MAX_K,
    TIE_MARGIN,
    Placement,
    build_sharded,
    fit_limits,
    load_saved_index,
    placement_for,
    search,
    search_to_run,
    set_nprobe,
)


@pytest.fixture
def shards(tmp_path):
    """300 passages as one shard and as 3 shards, and 20 queries."""
    docs = _vectors(300, 1)
    ids = [f"doc{i}" for i in range(300)]
    write_shard(tmp_path / "one/corpus", ids, docs, dict(META, kind="passage"))
    for s in range(3):
        write_shard(tmp_path / f"three/corpus.{s}", ids[s * 100:(s + 1) * 100], docs[s * 100:(s + 1) * 100],
                    dict(META, kind="passage", shard_index=s, num_shards=3))
    write_shard(tmp_path / "queries", [f"q{i}" for i in range(20)], _vectors(20, 2), dict(META, kind="query"))
    return tmp_path, docs, ids


def _run(tmp, depth=10, passages="one/corpus", **kwargs):
    return dict(search(resolve_shards(tmp / "queries"), resolve_shards(str(tmp / passages)), depth=depth, **kwargs))


def _docids(run):
    return {q: [d for d, _ in hits] for q, hits in run.items()}


# --------------------------------------------------------------------------- sharded sub-indexes
def test_faiss_index_shards_accept_one_add_only():
    """Why the sharded path fills sub-indexes first: the old build (shard, then chunked add) fails here."""
    shards = faiss.IndexShards(DIM, True, True)
    for _ in range(2):
        shards.add_shard(faiss.IndexFlatIP(DIM))
    shards.add(_vectors(64, 0))
    with pytest.raises(RuntimeError, match="single pass"):
        shards.add(_vectors(64, 1))


def test_build_sharded_over_cpu_sub_indexes_is_exact():
    """3 CPU sub-indexes of 1000 rows, each filled in 64-row add chunks: IndexShards == one IndexFlatIP."""
    docs, queries = _vectors(3000, 3), _vectors(7, 4)
    index = build_sharded(docs, [faiss.IndexFlatIP(DIM) for _ in range(3)], add_rows=64)
    assert isinstance(index, faiss.IndexShards) and index.ntotal == 3000
    assert [index.at(i).ntotal for i in range(3)] == [1000, 1000, 1000]
    flat = faiss.IndexFlatIP(DIM)
    flat.add(docs)
    scores, rows = index.search(queries, 50)
    ref_scores, ref_rows = flat.search(queries, 50)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)


def test_search_over_sharded_placement_equals_cpu(shards, monkeypatch):
    """The placement used on G GPUs, simulated with 3 CPU parts and more rows than one add chunk."""
    tmp, *_ = shards
    monkeypatch.setattr(faiss_index, "ADD_ROWS", 32)  # 100 rows per part: 4 add() calls each
    expected = _run(tmp, depth=50, use_gpu=False)
    for kwargs in ({}, {"block_rows": 70}, {"fp16_storage": True}):
        got = _run(tmp, depth=50, placement=Placement(parts=3), **kwargs)
        if kwargs.get("fp16_storage"):
            assert np.mean([len(set(a) & set(b)) / 50 for a, b in
                            zip(_docids(expected).values(), _docids(got).values())]) > 0.95
        else:
            assert got == expected
    assert _run(tmp, depth=50, passages="three/corpus.*", placement=Placement(parts=3)) == expected


# --------------------------------------------------------------------------- nprobe
def test_nprobe_is_set_on_cpu_ivf_and_on_every_sub_index(shards):
    tmp, *_ = shards
    exact = _docids(_run(tmp, depth=20, use_gpu=False))
    few = _docids(_run(tmp, depth=20, index_factory="IVF16,Flat", nprobe=1, use_gpu=False))
    every = _docids(_run(tmp, depth=20, index_factory="IVF16,Flat", nprobe=16, use_gpu=False))
    assert every == exact and few != exact  # nprobe reached the index: results change with it
    assert _docids(_run(tmp, depth=20, index_factory="IVF16,Flat", nprobe=16, placement=Placement(parts=2))) == exact
    assert _docids(_run(tmp, depth=20, index_factory="IVF16,Flat", nprobe=1, placement=Placement(parts=2))) != exact

    docs = _vectors(400, 5)
    template = faiss.index_factory(DIM, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    template.train(docs)
    index = build_sharded(docs, [faiss.clone_index(template) for _ in range(2)])
    assert set_nprobe(index, 3, CPU, "IVF4,Flat")
    assert [faiss.extract_index_ivf(index.at(i)).nprobe for i in range(2)] == [3, 3]
    assert not set_nprobe(faiss.IndexFlatIP(DIM), 3)  # no nprobe: a warning, not an error


# --------------------------------------------------------------------------- GPU limits
def test_fit_limits(caplog):
    gpus = Placement(gpus=(0, 1), parts=2, max_k=GPU_MAX_K)
    assert fit_limits(CPU, 5000) == (CPU, 5000 + TIE_MARGIN)
    assert fit_limits(gpus, 1000) == (gpus, 1000 + TIE_MARGIN)
    assert fit_limits(gpus, 2040) == (gpus, GPU_MAX_K)  # depth fits: only the tie margin is clipped
    with caplog.at_level(logging.WARNING):
        assert fit_limits(gpus, 2049) == (CPU, 2049 + TIE_MARGIN)
        assert fit_limits(gpus, 100, nprobe=4096) == (CPU, 100 + TIE_MARGIN)
    assert "depth=2049 is above faiss' GPU limit of 2048" in caplog.text and "nprobe=4096" in caplog.text


def test_depth_past_the_gpu_limit_searches_on_cpu(shards, monkeypatch, caplog):
    """A simulated 2-GPU placement with a limit of 10 hits per search: no search call asks for more;
    depth 8 stays on it (pool clipped to 10), depth 20 moves to the CPU; both give the exact run."""
    tmp, *_ = shards
    asked = []
    original = faiss.IndexShards.search

    def limited(self, x, k, **kwargs):
        asked.append(k)
        assert k <= 10, f"asked a 'GPU' for {k} hits"
        return original(self, x, k, **kwargs)

    monkeypatch.setattr(faiss.IndexShards, "search", limited)
    simulated = Placement(parts=2, max_k=10)
    assert _run(tmp, depth=8, placement=simulated) == _run(tmp, depth=8, use_gpu=False)
    assert asked and set(asked) == {10}
    asked.clear()
    with caplog.at_level(logging.WARNING, logger="densir.search.faiss_index"):
        assert _run(tmp, depth=20, placement=simulated) == _run(tmp, depth=20, use_gpu=False)
    assert not asked and "depth=20 is above faiss' GPU limit of 10" in caplog.text


# --------------------------------------------------------------------------- --use_gpu without a GPU
def test_use_gpu_without_a_gpu_is_one_clear_error(shards):
    tmp, *_ = shards
    assert placement_for(None, 0) == CPU and placement_for(False, 4) == CPU
    assert placement_for(None, 2) == Placement(gpus=(0, 1), parts=2, max_k=GPU_MAX_K)
    with pytest.raises(ParameterError, match="use_gpu: faiss sees no GPU.*drop use_gpu"):  # the CLI says --use_gpu
        placement_for(True, 0)
    if faiss.get_num_gpus() > 0:
        pytest.skip("faiss sees a GPU here: the CLI error cannot be shown")
    proc = run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", str(tmp / "queries"), "--passage_reps",
                    str(tmp / "one/corpus"), "--use_gpu", "--save_ranking_to", str(tmp / "x.run")], check=False)
    assert proc.returncode == 1 and not (tmp / "x.run").exists()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: --use_gpu: faiss sees no GPU") and "drop --use_gpu" in errors[0]


# --------------------------------------------------------------------------- saved indexes
def test_saved_hnsw_index_gives_the_same_run_as_building_it(shards):
    tmp, *_ = shards
    faiss.omp_set_num_threads(1)  # HNSW construction is deterministic with one thread
    try:
        search_to_run(str(tmp / "queries"), str(tmp / "one/corpus"), tmp / "built.run", depth=30,
                      index_factory="HNSW32", use_gpu=False)
        search_to_run(str(tmp / "queries"), str(tmp / "one/corpus"), tmp / "saving.run", depth=30,
                      index_factory="HNSW32", use_gpu=False, save_index=tmp / "idx/hnsw")
    finally:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
    assert sorted(os.listdir(tmp / "idx")) == ["hnsw.faiss", "hnsw.json"]  # no temp files left
    meta = json.loads((tmp / "idx/hnsw.json").read_text())
    assert meta["index_factory"] == "HNSW32" and meta["index_count"] == 300 and meta["model_fingerprint"] == "f00"
    proc = run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", str(tmp / "queries"), "--passage_reps",
                    str(tmp / "one/corpus"), "--depth", "30", "--no_gpu", "--load_index", str(tmp / "idx/hnsw"),
                    "--save_ranking_to", str(tmp / "loaded.run")])
    assert "loaded HNSW32 index of 300 vectors" in proc.stderr and "training" not in proc.stderr
    assert (tmp / "loaded.run").read_text() == (tmp / "saving.run").read_text() == (tmp / "built.run").read_text()


def test_saved_indexes_per_piece_and_merged_parts(shards):
    """Several passage shards: NAME.0 .. NAME.2; an IVF built over 2 sub-indexes is saved as one index."""
    tmp, *_ = shards
    kwargs = {"depth": 20, "index_factory": "IVF8,Flat", "nprobe": 8, "passages": "three/corpus.*"}
    saving = _run(tmp, placement=Placement(parts=2), save_index=tmp / "idx/ivf", **kwargs)
    assert sorted(os.listdir(tmp / "idx")) == [f"ivf.{j}.{ext}" for j in range(3) for ext in ("faiss", "json")]
    index, factory = load_saved_index(tmp / "idx/ivf.1", resolve_shards(tmp / "three/corpus.1")[0])
    assert factory == "IVF8,Flat" and index.ntotal == 100 and not isinstance(index, faiss.IndexShards)
    kwargs.pop("index_factory")
    assert _run(tmp, use_gpu=False, load_index=tmp / "idx/ivf", **kwargs) == saving
    assert _docids(saving) == _docids(_run(tmp, depth=20, use_gpu=False))  # nprobe 8 of 8 cells: exact


def test_saved_index_refused_when_it_does_not_match(shards):
    tmp, docs, ids = shards
    q = resolve_shards(tmp / "queries")
    list(search(q, resolve_shards(tmp / "one/corpus"), depth=5, index_factory="HNSW16", use_gpu=False,
                save_index=tmp / "idx/h"))
    for name, meta, match in [
        ("small", dict(META, kind="passage"), "count=300, but passage shard .*small/corpus.json has count=200"),
        ("other", dict(META, kind="passage", model_fingerprint="bad"), "model_fingerprint='f00'.*'bad'"),
    ]:
        n = 200 if name == "small" else 300
        write_shard(tmp / f"{name}/corpus", ids[:n], docs[:n], meta)
        with pytest.raises(InputError, match=match):
            load_saved_index(tmp / "idx/h", resolve_shards(tmp / f"{name}/corpus")[0])
    p = resolve_shards(tmp / "one/corpus")
    with pytest.raises(InputError, match="the saved index is 'HNSW16', index_factory says 'HNSW32'"):
        list(search(q, p, depth=5, index_factory="HNSW32", use_gpu=False, load_index=tmp / "idx/h"))
    with pytest.raises(InputError, match="no such saved index"):
        list(search(q, p, depth=5, use_gpu=False, load_index=tmp / "idx/missing"))
    os.remove(tmp / "idx/h.json")  # as if the job died between the two renames
    with pytest.raises(InputError, match="half-written saved index"):
        list(search(q, p, depth=5, use_gpu=False, load_index=tmp / "idx/h"))
    with pytest.raises(ParameterError, match="save_index: is for ANN factories"):
        list(search(q, p, depth=5, use_gpu=False, save_index=tmp / "idx/flat"))


def test_a_bad_factory_is_one_clear_error(shards):
    tmp, *_ = shards
    with pytest.raises(ParameterError, match=r"index_factory: faiss cannot build 'NoSuchIndex' for dim 16: "
                                         r".*could not parse index string NoSuchIndex"):
        _run(tmp, index_factory="NoSuchIndex", use_gpu=False)
    with pytest.raises(ParameterError, match=r"'IVF4,PQ3' for dim 16: .*multiple of the number of subquantizers"):
        _run(tmp, index_factory="IVF4,PQ3", use_gpu=False)
