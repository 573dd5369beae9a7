"""Search: query embedding shards x passage embedding shards -> top-k per query (FAISS).

Reads  query and passage shards of :mod:`densir.embeddings` (memory-mapped; a name or a glob
       pattern over names, checked whole), refusing half-written shards and passage shards
       encoded by another model (fingerprint, pooling, normalize, dim must match the queries').
Yields ``(qid, [(docid, score), ...])`` best first, in query order; the CLI
       (``python -m densir.faiss_retriever``) writes them as a TREC run.

Exact inner product (``IndexFlatIP``) by default, streamed over blocks of the memory-mapped
passages so memory stays bounded by a block; any other FAISS factory string (``HNSW32``,
``IVF4096,PQ64`` ...) builds one index per shard piece (trained on a sample of it). Each block's
top-k is merged into a running top-k over all queries, memory O(queries x depth). GPU (all of
them, sharded) when faiss sees one, unless told not to; ``fp16_storage`` halves index memory.

Searching one passage shard per job and merging the runs with
:mod:`densir.faiss_retriever.reducer` gives the same ranking as searching all shards at once.
"""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from densir.embeddings import EmbeddingShard, resolve_shards
from densir.io import InputError, atomic_write, write_run_hits

logger = logging.getLogger(__name__)

FLAT_BLOCK_ROWS = 1 << 20  # passages per exact-search block (1M x 768 fp32 = 3 GB)
TRAIN_SAMPLE_ROWS = 1 << 18
SCORE_DECIMALS = 6  # the precision of run files: scores are rounded before ranking so that
# a single-shard run and per-shard runs merged by the reducer (which reads rounded scores) agree
TIE_MARGIN = 16  # extra candidates kept so that a tie at the depth cut is broken by docid, like the reducer


def search(query_shards: Sequence[EmbeddingShard], passage_shards: Sequence[EmbeddingShard], depth: int,
           index_factory: str = "Flat", use_gpu: bool | None = None, batch_size: int = 128,
           fp16_storage: bool = False, nprobe: int | None = None,
           block_rows: int = FLAT_BLOCK_ROWS) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """Top-``depth`` passages for every query, as ``(qid, [(docid, score), ...])`` best first.

    ``use_gpu``: None = when faiss sees a GPU, True = require one, False = CPU.
    """
    import faiss

    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not query_shards or not passage_shards:
        raise ValueError("need at least one query shard and one passage shard")
    reference = query_shards[0]
    for shard in list(query_shards[1:]) + list(passage_shards):
        reference.check_compatible(shard)
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu and num_gpus == 0:
        raise RuntimeError("--use_gpu given but faiss sees no GPU (is faiss-gpu installed?)")
    gpu = num_gpus > 0 if use_gpu is None else use_gpu

    qids = [qid for s in query_shards for qid in s.ids()]
    if len(set(qids)) != len(qids):
        raise InputError(reference.name, None, "duplicate query ids across query shards")
    queries = np.concatenate([np.asarray(s.vectors(), dtype=np.float32) for s in query_shards]) \
        if qids else np.empty((0, reference.dim), np.float32)
    total = sum(s.count for s in passage_shards)
    if total == 0:
        raise InputError(passage_shards[0].name, None, "the passage shards hold no vectors")
    logger.info("searching %d queries x %d passages in %d shard piece(s): %s, depth %d, %s%s", len(qids), total,
                len(passage_shards), index_factory, depth, "GPU" if gpu else "CPU", ", fp16 storage" if fp16_storage else "")

    # the final order is (rounded score desc, docid asc), a total order the reducer reproduces
    # exactly; the pool holds a few more candidates than depth so a tie at the cut sorts the same
    pool = depth + TIE_MARGIN
    top_scores = np.full((len(qids), pool), -np.inf, dtype=np.float32)
    top_rows = np.full((len(qids), pool), -1, dtype=np.int64)  # row in the concatenation of passage shards
    offset = 0
    for shard in passage_shards:
        vectors = shard.vectors()
        exact = index_factory.replace(" ", "").lower() == "flat"
        step = block_rows if exact else max(shard.count, 1)
        for start in range(0, shard.count, step):
            block = vectors[start:start + step]
            index = build_index(block, index_factory, gpu, fp16_storage, nprobe)
            k = min(pool, index.ntotal)
            for b in tqdm(range(0, len(qids), batch_size), desc=f"search {shard.name}[{start}:]", unit="batch",
                          disable=len(qids) <= batch_size, mininterval=10):
                scores, rows = index.search(queries[b:b + batch_size], k)
                rows = np.where(rows >= 0, rows + offset + start, -1)
                scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
                top_scores[b:b + batch_size], top_rows[b:b + batch_size] = merge_topk(
                    top_scores[b:b + batch_size], top_rows[b:b + batch_size], scores, rows, pool)
            del index
        offset += shard.count

    docids = _resolve_ids(passage_shards, top_rows)
    for i, qid in enumerate(qids):
        hits = [(docids[i, j], round(float(top_scores[i, j]), SCORE_DECIMALS))
                for j in range(pool) if top_rows[i, j] >= 0]
        hits.sort(key=lambda h: (-h[1], h[0]))
        yield qid, hits[:depth]


def search_to_run(query_spec: str, passage_spec: str, save_ranking_to, depth: int,
                  num_passage_shards: int | None = None, tag: str = "densir", **search_kwargs) -> int:
    """Resolve shard names/patterns, search, write a TREC run; return the number of queries written."""
    query_shards = resolve_shards(query_spec, kind="query")
    passage_shards = resolve_shards(passage_spec, expected_shards=num_passage_shards, kind="passage")
    n = 0
    with atomic_write(save_ranking_to) as f:
        for qid, hits in search(query_shards, passage_shards, depth, **search_kwargs):
            write_run_hits(f, qid, hits, tag=tag, sort=False)
            n += 1
    logger.info("wrote %s (%d queries, depth %d)", save_ranking_to, n, depth)
    return n


def merge_topk(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray, rows_b: np.ndarray,
               depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``depth`` of two (scores, ids) candidate sets; stable, so earlier rows win ties."""
    scores = np.concatenate([scores_a, scores_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def build_index(vectors: np.ndarray, index_factory: str = "Flat", gpu: bool = False, fp16_storage: bool = False,
                nprobe: int | None = None, add_rows: int = 1 << 16):
    """An inner-product FAISS index over ``vectors`` (float32/float16, possibly memory-mapped)."""
    import faiss

    dim = vectors.shape[1]
    factory = index_factory
    if fp16_storage and not gpu and factory.replace(" ", "").lower() == "flat":
        factory = "SQfp16"  # exact scores from fp16-stored vectors on CPU
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if gpu:
        try:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            options.useFloat16 = fp16_storage
            index = faiss.index_cpu_to_all_gpus(index, co=options)
        except (RuntimeError, AttributeError) as e:  # e.g. HNSW has no GPU version
            logger.warning("cannot put %s on the GPU (%s); searching on CPU", index_factory, e)
    if not index.is_trained:
        rng = np.random.default_rng(0)
        n = len(vectors)
        sample = np.sort(rng.choice(n, size=min(n, TRAIN_SAMPLE_ROWS), replace=False))
        logger.info("training %s on %d of %d vectors", index_factory, len(sample), n)
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in range(0, len(vectors), add_rows):
        index.add(np.ascontiguousarray(vectors[start:start + add_rows], dtype=np.float32))
    if nprobe is not None:
        try:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
        except RuntimeError:
            logger.warning("%s has no nprobe; ignoring --nprobe", index_factory)
    return index


def _resolve_ids(passage_shards: Sequence[EmbeddingShard], rows: np.ndarray) -> np.ndarray:
    """Global passage rows -> docid strings, reading one shard's ids at a time."""
    out = np.empty(rows.shape, dtype=object)
    offset = 0
    for shard in passage_shards:
        mask = (rows >= offset) & (rows < offset + shard.count)
        if mask.any():
            ids = np.asarray(shard.ids(), dtype=object)
            out[mask] = ids[rows[mask] - offset]
        offset += shard.count
    return out
