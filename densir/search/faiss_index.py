"""Search: query embedding shards x passage embedding shards -> top-k per query (FAISS).

Reads  query and passage shards of :mod:`densir.embeddings` (memory-mapped; a name or a glob
       pattern over names, checked whole), refusing half-written shards and passage shards
       encoded by another model (fingerprint, pooling, normalize, dim must match the queries'),
       and, with ``load_index``, saved ANN indexes (``NAME.faiss`` + ``NAME.json``).
Yields ``(qid, [(docid, score), ...])`` best first, in query order; the CLI
       (``python -m densir.faiss_retriever``) writes them as a TREC run.
Writes with ``save_index``, each passage piece's ANN index as ``NAME.faiss`` + ``NAME.json``.

Exact inner product (``IndexFlatIP``) by default, streamed over blocks of the memory-mapped
passages so memory stays bounded by a block; any other FAISS factory string (``HNSW32``,
``IVF4096,PQ64`` ...) builds one index per shard piece (trained on a sample of it). Each block's
top-k is merged into a running top-k of its passage shard, memory O(queries x depth) per shard.
:class:`ShardIndex` holds the indexes (kept, for the Python API, or built per search).

Where an index lives is a :class:`Placement`: the CPU, or GPUs. On G GPUs every index is G
sub-indexes, sub-index i filled with the i-th contiguous slice of the block (added in chunks to
that one sub-index) and joined by ``faiss.IndexShards(successive_ids=True)`` *after* they are
filled; faiss' own ``shard=True`` cloner followed by chunked ``add()`` fails on the second chunk
(IndexShards accepts add() in a single pass only). The same code builds the sub-indexes on the
CPU when a placement has several ``parts`` and no GPU, which is how the tests run it.

GPU limits (faiss' ``GPU_MAX_SELECTION_K``): one GPU search returns at most 2,048 hits per query
and visits at most 2,048 IVF cells. The search asks for ``depth + TIE_MARGIN`` candidates,
clipped to 2,048 on a GPU; a depth (or nprobe) above 2,048 is searched on the CPU, with a
warning, rather than failing. nprobe is set through ``faiss.GpuParameterSpace`` on GPU indexes
(``faiss.ParameterSpace`` on CPU ones), which reaches every sub-index of an IndexShards.

Saved indexes: ``NAME.faiss`` (``faiss.write_index``, a CPU index) + ``NAME.json`` (the passage
piece's shard meta, the factory string and the index's vector count), written to temp names and
renamed, ``.json`` last. Loading refuses an index whose json disagrees with the passage piece it
is loaded for (model fingerprint, pooling, normalize, dim, count, shard index, rank). With
several passage pieces in one search, piece j's index is ``NAME.j``.

Chunked passage shards (``encode --chunk_tokens``: one row per token window, the docid repeated on
adjacent rows) are searched as documents: a document scores its best window (``doc_aggregation=
"maxp"``, the default) or its first window (``"firstp"``: the index holds the first windows only),
and is returned once, under its corpus id. MaxP asks each passage shard for ``(depth + TIE_MARGIN)
x M`` window hits, M the most windows a passage of the search has: that many hits hold at least
``depth + TIE_MARGIN`` distinct documents (or every document), and a document's first hit in
score order is its best window, so the top ``depth`` documents are exact. A search mixing chunked
and unchunked passage shards (or two chunkings) is refused: one encoding run per search.

Ranking is :mod:`densir.ranking`'s, per passage shard, then merged as the reducer merges shard
runs: searching one passage shard per job and merging the runs with
:mod:`densir.faiss_retriever.reducer` gives the same run as searching all shards at once.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from densir.embeddings import COMPATIBLE_FIELDS, EmbeddingShard, resolve_shards, run_starts
from densir.io import InputError, ParameterError, read_json, write_json, write_run
from densir.ranking import TIE_MARGIN, Hit, merge, merge_candidates, rank, round_score

logger = logging.getLogger(__name__)

FLAT_BLOCK_ROWS = 1 << 20  # passages per exact-search block (1M x 768 fp32 = 3 GB)
TRAIN_SAMPLE_ROWS = 1 << 18
ADD_ROWS = 1 << 16  # rows per add() call: bounds the temporary float32 copy of a memory-mapped slice
GPU_MAX_K = 2048  # faiss GPU_MAX_SELECTION_K (CUDA builds): most hits per query, and most IVF cells probed
# the meta fields a saved index must share with the passage piece it is loaded for
SAVED_INDEX_FIELDS = COMPATIBLE_FIELDS + ("count", "kind", "shard_index", "num_shards", "rank", "world_size")

DOC_AGGREGATIONS = ("maxp", "firstp")  # a chunked shard's document score: its best window, its first window

_GPU_RESOURCES: dict[int, object] = {}  # one faiss.StandardGpuResources per device, kept alive for the process


# --------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class Placement:
    """Where an index is built and searched.

    ``gpus``: faiss device ids (empty: CPU). ``parts``: sub-indexes per index, one slice of the
    vectors each (one per GPU; on CPU > 1 only to exercise the sharded path). ``max_k``: most hits
    (and IVF cells) one search call may ask for; None = no limit.
    """

    gpus: tuple[int, ...] = ()
    parts: int = 1
    max_k: int | None = None

    @property
    def on_gpu(self) -> bool:
        return bool(self.gpus)

    def describe(self) -> str:
        if self.on_gpu:
            return f"GPU {','.join(map(str, self.gpus))}" + (f" ({self.parts} shards)" if self.parts > 1 else "")
        return "CPU" + (f" ({self.parts} sub-indexes)" if self.parts > 1 else "")

    def sub_index(self, template, i: int, fp16_storage: bool = False):
        """An empty copy of the (trained) CPU ``template`` where sub-index ``i`` lives."""
        import faiss

        if not self.on_gpu:
            return faiss.clone_index(template)
        device = self.gpus[i % len(self.gpus)]
        options = faiss.GpuClonerOptions()
        options.useFloat16 = fp16_storage
        return faiss.index_cpu_to_gpu(_gpu_resources(device), device, template, options)

    def place(self, index, fp16_storage: bool = False, factory: str = ""):
        """``(index, placement)``: a filled CPU index (e.g. loaded from disk) moved here by faiss'
        cloner in one pass (sharded over several GPUs), or left on the CPU if it has no GPU version."""
        import faiss

        if not self.on_gpu:
            return index, self
        try:
            if len(self.gpus) == 1:
                return self.sub_index(index, 0, fp16_storage), self
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True
            options.useFloat16 = fp16_storage
            return faiss.index_cpu_to_gpu_multiple_py([_gpu_resources(g) for g in self.gpus], index, options,
                                                      list(self.gpus)), self
        except (RuntimeError, AttributeError) as e:
            logger.warning("cannot put %s on the GPU (%s); searching it on the CPU", factory or "the index", e)
            return index, CPU

    def parameter_space(self):
        import faiss

        return faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()


CPU = Placement()


def placement_for(use_gpu: bool | None, num_gpus: int | None = None) -> Placement:
    """None = every GPU faiss sees (else CPU), True = require a GPU, False = CPU."""
    if num_gpus is None:
        num_gpus = _faiss_num_gpus()
    if use_gpu and num_gpus == 0:
        raise ParameterError("use_gpu", "faiss sees no GPU (faiss-cpu installed, or no CUDA device visible: "
                         "check CUDA_VISIBLE_DEVICES and `python -c 'import faiss; print(faiss.get_num_gpus())'`); "
                             "drop {name} to search on the CPU")
    if use_gpu is False or num_gpus == 0:
        return CPU
    return Placement(gpus=tuple(range(num_gpus)), parts=num_gpus, max_k=GPU_MAX_K)


def fit_limits(placement: Placement, depth: int, nprobe: int | None = None, per_hit: int = 1) -> tuple[Placement, int]:
    """The placement to search on and the candidates per query to ask for (``depth + TIE_MARGIN``,
    times ``per_hit``: the most rows one hit has, the windows of a chunked passage).

    A placement with a ``max_k`` gets at most that many; a ``depth x per_hit`` or nprobe above it
    is searched on the CPU instead, with a warning.
    """
    pool = (depth + TIE_MARGIN) * per_hit
    need = depth * per_hit
    if placement.max_k is None:
        return placement, pool
    if need > placement.max_k or (nprobe or 0) > placement.max_k:
        what = (f"depth={depth}" + (f" x {per_hit} windows" if per_hit > 1 else "")) if need > placement.max_k \
            else f"nprobe={nprobe}"
        logger.warning("%s is above faiss' GPU limit of %d (hits per query and IVF cells per search): "
                       "searching on the CPU instead (slower)", what, placement.max_k)
        return CPU, pool
    return placement, min(pool, placement.max_k)


# --------------------------------------------------------------------------- search
class ShardIndex:
    """FAISS indexes over passage shards, searched as one search job per passage shard + the reducer.

    Example: ``ShardIndex(resolve_shards("runs/demo/round2/enc/corpus.*"), keep=True)``, then
    ``search(query_vectors, depth)`` (see the methods).

    Each passage shard (its torchrun pieces together) gives its own top ``depth`` of ``depth +
    TIE_MARGIN`` candidates, scores rounded, ranked by :mod:`densir.ranking`; the shards' lists
    are merged as the reducer merges shard runs: one search over N shards is the N runs reduced.

    ``keep=True`` builds (or loads) every index once and keeps it (:class:`~densir.search.searcher.Searcher`);
    ``keep=False`` builds each piece's index during a search and drops it before the next (exact
    search: block by block of ``block_rows``): memory holds one block's index and each passage
    shard's candidates, O(shards x queries x depth) (the search stage, mostly one shard a job).
    ``save_index`` / ``load_index``: a saved-index name (see the module doc); with ``load_index``
    the factory is the saved one (``index_factory`` None, or the same string).
    ``doc_aggregation``: a chunked shard's document score, ``"maxp"`` or ``"firstp"`` (module doc).
    """

    def __init__(self, passage_shards: Sequence[EmbeddingShard], index_factory: str | None = "Flat",
                 use_gpu: bool | None = None, fp16_storage: bool = False, nprobe: int | None = None,
                 placement: Placement | None = None, block_rows: int = FLAT_BLOCK_ROWS, save_index=None,
                 load_index=None, keep: bool = True, doc_aggregation: str = "maxp"):
        if not passage_shards:
            raise ValueError("need at least one passage shard")
        if save_index is not None and load_index is not None:
            raise ValueError("save_index and load_index exclude each other")
        if index_factory is None and load_index is None:
            index_factory = "Flat"
        if save_index is not None and _is_flat(index_factory):
            raise ParameterError("save_index", "is for ANN factories (HNSW, IVF); exact Flat search reads "
                                 "the passage shards themselves, there is nothing to save")
        if sum(s.count for s in passage_shards) == 0:
            raise InputError(passage_shards[0].name, None, "the passage shards hold no vectors")
        self.index_factory, self.fp16_storage, self.nprobe = index_factory, fp16_storage, nprobe
        self.block_rows, self.load = block_rows, load_index is not None
        self.placement = placement if placement is not None else placement_for(use_gpu)
        saved = load_index if load_index is not None else save_index
        self.pieces: dict[int, list] = {}  # shard index -> [(first global row, piece, saved-index name)]
        offset = 0
        for j, shard in enumerate(passage_shards):
            name = None if saved is None else saved_index_name(saved, j, len(passage_shards))
            self.pieces.setdefault(int(shard.meta.get("shard_index", 0)), []).append((offset, shard, name))
            offset += shard.count
        self.ids = np.concatenate([_read_ids(s) for s in passage_shards])  # bytes, row -> docid
        self.chunked, self.doc_aggregation = _check_chunking(passage_shards, doc_aggregation)
        self.per_hit = 1  # rows a document may have among the hits (MaxP: its windows)
        self.first_rows = None  # FirstP: the first window's row of each passage
        if self.chunked:
            first = run_starts(self.ids)
            if self.doc_aggregation == "firstp":
                if saved is not None:
                    raise ParameterError("doc_aggregation", "firstp searches an index of the first windows only; "
                                         "it cannot save or load an index of all windows (drop save/load_index)")
                self.first_rows = first
            else:
                self.per_hit = int(np.diff(np.append(first, len(self.ids))).max()) if len(first) else 1
            logger.info("chunked passages: %d documents, %d windows (at most %d a document), %s",
                        len(first), len(self.ids), int(np.diff(np.append(first, len(self.ids))).max()),
                        self.doc_aggregation)
        logger.info("%d passages in %d shard piece(s): %s, %s%s", len(self.ids), len(passage_shards),
                    saved if self.load else index_factory, self.placement.describe(), ", fp16" if fp16_storage else "")
        self.kept = None if not keep else {  # id(piece) -> [(first row, index, rowmap)]
            id(shard): list(self._open(shard, name, self.placement)) for _, shard, name in sum(self.pieces.values(), [])}

    def search(self, queries: np.ndarray, depth: int, batch_size: int | None = None) -> Iterator[list[Hit]]:
        """Each query's top ``depth`` ``[(docid, score), ...]``, best first; ``batch_size`` queries a FAISS call."""
        if depth < 1:
            raise ParameterError("depth", f"must be >= 1, got {depth}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        placement, pool = fit_limits(self.placement, depth, self.nprobe, self.per_hit)
        pool = min(pool, max(len(self.ids), 1))  # never more candidates than rows (MaxP's pool grows with M)
        if self.kept is not None and placement != self.placement:
            raise ParameterError("depth", f"{depth} is above faiss' GPU limit of {self.placement.max_k}: "
                                 "keep the index on the CPU (use_gpu=False) for such depths")
        candidates = [self._candidates(pieces, queries, placement, pool, batch_size or max(len(queries), 1))
                      for pieces in self.pieces.values()]
        for i in range(len(queries)):
            yield merge((rank(self._documents(scores[i], rows[i]), depth) for scores, rows in candidates), depth)

    def _documents(self, scores: np.ndarray, rows: np.ndarray) -> Iterator[Hit]:
        """One query's ``(docid, rounded score)`` from its candidates (best first): each document once,
        at its first, i.e. best, candidate (a chunked shard's MaxP; FirstP's index has one row a document)."""
        seen = set() if self.chunked else None
        for s, r in zip(scores, rows):
            if r < 0:
                continue
            docid = self.ids[r]
            if seen is not None:
                if docid in seen:
                    continue
                seen.add(docid)
            yield docid.decode("utf-8"), round_score(s)

    def _candidates(self, pieces, queries: np.ndarray, placement: Placement, pool: int, batch_size: int):
        """One passage shard's top ``pool`` (scores, global rows) per query, over all its pieces."""
        top_scores = np.full((len(queries), pool), -np.inf, dtype=np.float32)
        top_rows = np.full((len(queries), pool), -1, dtype=np.int64)
        for offset, shard, name in pieces:
            indexes = self.kept[id(shard)] if self.kept is not None else self._open(shard, name, placement)
            for start, index, rowmap in indexes:
                k = min(pool, index.ntotal)
                for b in tqdm(range(0, len(queries), batch_size), desc=f"search {shard.name}[{start}:]",
                              unit="batch", disable=len(queries) <= batch_size, mininterval=10):
                    scores, rows = index.search(queries[b:b + batch_size], k)
                    if rowmap is not None:  # an index over some of the rows (FirstP: first windows)
                        rows = np.where(rows >= 0, rowmap[np.maximum(rows, 0)], -1)
                    else:
                        rows = np.where(rows >= 0, rows + offset + start, -1)
                    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
                    top_scores[b:b + batch_size], top_rows[b:b + batch_size] = merge_candidates(
                        top_scores[b:b + batch_size], top_rows[b:b + batch_size], scores, rows, pool)
                del index
        return top_scores, top_rows

    def _open(self, shard: EmbeddingShard, saved_name, placement: Placement):
        """``(first row, index, rowmap)`` over one passage piece: exact search in blocks, one ANN index, or
        the saved one. ``rowmap`` (FirstP) is the global row of each vector of an index over the first
        windows only; None when the index holds the rows from ``first row`` on, in order."""
        if self.load:
            index, factory = load_saved_index(saved_name, shard, self.index_factory)
            index, where = placement.place(index, self.fp16_storage, factory)
            yield 0, _ready(index, where, self.nprobe, factory), None
            return
        offset = next(o for pieces in self.pieces.values() for o, s, _ in pieces if s is shard)
        step = self.block_rows if _is_flat(self.index_factory) else max(shard.count, 1)
        for start in range(0, shard.count, step):
            vectors, rowmap = shard.vectors()[start:start + step], None
            if self.first_rows is not None:
                lo, hi = np.searchsorted(self.first_rows, [offset + start, offset + start + len(vectors)])
                rowmap = self.first_rows[lo:hi]
                vectors = vectors[rowmap - offset - start]
                if not len(rowmap):
                    continue
            index, where = _build(vectors, self.index_factory, placement, self.fp16_storage)
            _ready(index, where, self.nprobe, self.index_factory)
            if saved_name is not None:
                write_saved_index(saved_name, index, shard, self.index_factory, where)
            yield start, index, rowmap
            del index  # before the next block is built: one block's index in memory at a time


def search(query_shards: Sequence[EmbeddingShard], passage_shards: Sequence[EmbeddingShard], depth: int,
           batch_size: int = 128, **index_kwargs) -> Iterator[tuple[str, list[Hit]]]:
    """Top-``depth`` passages for every query, as ``(qid, [(docid, score), ...])`` best first.

    ``index_kwargs`` go to :class:`ShardIndex`, built for this search (``keep=False``):
    ``index_factory``, ``use_gpu`` (None = when faiss sees a GPU, True = require one, False =
    CPU), ``placement`` (overrides it; ``Placement(parts=3, max_k=10)`` is a 3-GPU machine
    simulated on CPU), ``fp16_storage``, ``nprobe``, ``block_rows``, ``save_index``, ``load_index``,
    ``doc_aggregation`` (chunked passage shards: ``"maxp"`` or ``"firstp"``).
    """
    if not query_shards:
        raise ValueError("need at least one query shard")
    reference = query_shards[0]
    for shard in list(query_shards[1:]) + list(passage_shards):
        reference.check_compatible(shard)
    qids = [qid for s in query_shards for qid in s.ids()]
    if len(set(qids)) != len(qids):
        raise InputError(reference.name, None, "duplicate query ids across query shards")
    queries = np.concatenate([np.asarray(s.vectors(), dtype=np.float32) for s in query_shards]) \
        if qids else np.empty((0, reference.dim), np.float32)
    logger.info("searching %d queries, depth %d", len(qids), depth)
    yield from zip(qids, ShardIndex(passage_shards, keep=False, **index_kwargs).search(queries, depth, batch_size))


def search_to_run(query_spec: str, passage_spec: str, save_ranking_to, depth: int,
                  num_passage_shards: int | None = None, tag: str = "densir", **search_kwargs) -> int:
    """Resolve shard names/patterns, search, write a TREC run; return the number of queries written."""
    query_shards = resolve_shards(query_spec, kind="query")
    passage_shards = resolve_shards(passage_spec, expected_shards=num_passage_shards, kind="passage")
    n = write_run(save_ranking_to, search(query_shards, passage_shards, depth, **search_kwargs), tag, sort=False)
    logger.info("wrote %s (%d queries, depth %d)", save_ranking_to, n, depth)
    return n


def _check_chunking(passage_shards: Sequence[EmbeddingShard], doc_aggregation: str) -> tuple[bool, str]:
    """``(chunked, aggregation)``: the passage shards must agree on chunk_tokens/chunk_stride (all
    unchunked, or one chunking): a document's score must not depend on which shard it is in."""
    if doc_aggregation not in DOC_AGGREGATIONS:
        raise ParameterError("doc_aggregation", f"must be one of {', '.join(DOC_AGGREGATIONS)}, got {doc_aggregation!r}")
    first = passage_shards[0]
    chunking = (first.meta.get("chunk_tokens"), first.meta.get("chunk_stride"))
    for shard in passage_shards[1:]:
        other = (shard.meta.get("chunk_tokens"), shard.meta.get("chunk_stride"))
        if other != chunking:
            def says(c):
                return "unchunked" if c[0] is None else f"chunk_tokens={c[0]}, chunk_stride={c[1]}"
            raise InputError(shard.json_path, None, f"{says(other)}, but {first.json_path} is {says(chunking)}: "
                             "passage shards of one search come from one encoding run (re-encode with one "
                             "--chunk_tokens/--chunk_stride)", "chunk_tokens")
    return chunking[0] is not None, doc_aggregation


# --------------------------------------------------------------------------- building
def _build(vectors: np.ndarray, index_factory: str, placement: Placement, fp16_storage: bool = False,
           add_rows: int | None = None):
    """``(filled index, the placement it ended up on)``."""
    factory = index_factory
    if fp16_storage and not placement.on_gpu and _is_flat(factory):
        factory = "SQfp16"  # exact scores from fp16-stored vectors on CPU
    template = trained_template(vectors, factory)
    if placement == CPU:
        return build_sharded(vectors, [template], add_rows), placement
    try:
        parts = [placement.sub_index(template, i, fp16_storage) for i in range(placement.parts)]
    except (RuntimeError, AttributeError) as e:  # e.g. HNSW has no GPU version
        if not placement.on_gpu:
            raise
        logger.warning("cannot put %s on the GPU (%s); building and searching it on the CPU", index_factory, e)
        placement, parts = CPU, [template]
    return build_sharded(vectors, parts, add_rows), placement


def trained_template(vectors: np.ndarray, factory: str):
    """An empty CPU index of ``factory`` (inner product), trained on a sample of ``vectors`` if it needs training."""
    import faiss

    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:  # faiss' message ends with the reason, after its C++ location
        reason = str(e).split(": ", 1)[-1].strip()
        raise ParameterError("index_factory", f"faiss cannot build {factory!r} for dim {vectors.shape[1]}: "
                             f"{reason}") from None
    if not index.is_trained:
        rng = np.random.default_rng(0)
        n = len(vectors)
        sample = np.sort(rng.choice(n, size=min(n, TRAIN_SAMPLE_ROWS), replace=False))
        logger.info("training %s on %d of %d vectors", factory, len(sample), n)
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    return index


def build_sharded(vectors: np.ndarray, parts: Sequence, add_rows: int | None = None):
    """Fill ``parts`` (empty, trained indexes, CPU or GPU) with contiguous slices of ``vectors``.

    Part i gets rows ``[i*n//p, (i+1)*n//p)``, added ``add_rows`` at a time to that part alone;
    several parts are then joined by ``faiss.IndexShards(d, threaded, successive_ids=True)``,
    whose search offsets part i's ids by the rows of the parts before it. Joining after filling
    is the point: IndexShards itself accepts add() in a single pass only.
    """
    import faiss

    n, p = len(vectors), len(parts)
    add_rows = add_rows or ADD_ROWS
    for i, part in enumerate(parts):
        for start in range(i * n // p, (i + 1) * n // p, add_rows):
            stop = min(start + add_rows, (i + 1) * n // p)
            part.add(np.ascontiguousarray(vectors[start:stop], dtype=np.float32))
    if p == 1:
        return parts[0]
    shards = faiss.IndexShards(vectors.shape[1], True, True)
    for part in parts:
        shards.add_shard(part)  # faiss' wrapper keeps a Python reference to each part
    assert shards.ntotal == n, (shards.ntotal, n)
    return shards


def set_nprobe(index, nprobe: int, placement: Placement = CPU, factory: str = "") -> bool:
    """Set IVF's nprobe on ``index`` and all its sub-indexes; False (with a warning) when it has none."""
    try:
        placement.parameter_space().set_index_parameter(index, "nprobe", nprobe)
    except RuntimeError:
        logger.warning("%s has no nprobe; ignoring nprobe", factory or "this index")
        return False
    return True


def _ready(index, placement: Placement, nprobe: int | None, factory: str):
    if nprobe is not None:
        set_nprobe(index, nprobe, placement, factory)
    return index


# --------------------------------------------------------------------------- saved indexes
def saved_index_name(name, piece: int, num_pieces: int) -> str:
    """The saved-index name of passage piece ``piece``: NAME for a single piece, else NAME.piece."""
    return str(name) if num_pieces == 1 else f"{name}.{piece}"


def write_saved_index(name, index, shard: EmbeddingShard, factory: str, placement: Placement = CPU) -> None:
    """``NAME.faiss`` (the index as a CPU index) then ``NAME.json`` (the piece's meta, factory, count), atomically."""
    import faiss

    name = str(name)
    cpu_index = _to_cpu(index, placement)
    directory = os.path.dirname(name) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(name) + ".faiss.tmp-", dir=directory)
    os.close(fd)
    try:
        faiss.write_index(cpu_index, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if os.path.exists(name + ".json"):
            os.unlink(name + ".json")  # never a json beside an index it does not describe
        os.replace(tmp, name + ".faiss")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    meta = dict(shard.meta, passage_shard=os.path.basename(shard.name), index_factory=factory,
                index_count=int(cpu_index.ntotal))
    write_json(name + ".json", meta)  # last: the saved index is complete exactly when its json exists
    logger.info("saved %s index of %d vectors to %s.faiss", factory, cpu_index.ntotal, name)


def load_saved_index(name, shard: EmbeddingShard, index_factory: str | None = None):
    """``(index, factory)`` from ``NAME.faiss``, refused unless ``NAME.json`` matches ``shard``."""
    import faiss

    name = str(name)
    json_path, index_path = name + ".json", name + ".faiss"
    if not os.path.exists(json_path):
        what = "half-written saved index (its .json is missing; save it again)" \
            if os.path.exists(index_path) else "no such saved index (save one first: save_index)"
        raise InputError(json_path, None, what)
    meta = read_json(json_path)
    fingerprinted = bool(meta.get("model_fingerprint") and shard.meta.get("model_fingerprint"))
    fields = SAVED_INDEX_FIELDS if fingerprinted else ("model",) + SAVED_INDEX_FIELDS[1:]
    for key in fields:
        if meta.get(key) != shard.meta.get(key):
            raise InputError(json_path, None, f"{key}={meta.get(key)!r}, but passage shard {shard.json_path} has "
                             f"{key}={shard.meta.get(key)!r}: the saved index was built from other passages "
                             "(save it again)", key)
    factory = meta.get("index_factory")
    if index_factory is not None and not _is_flat(index_factory) and index_factory != factory:
        raise InputError(json_path, None, f"the saved index is {factory!r}, index_factory says {index_factory!r}",
                         "index_factory")
    index = faiss.read_index(index_path)
    if index.ntotal != meta.get("index_count") or index.ntotal != shard.count or index.d != shard.dim:
        raise InputError(index_path, None, f"holds {index.ntotal} vectors of dim {index.d}; {json_path} says "
                         f"{meta.get('index_count')} and the passage shard {shard.count} of dim {shard.dim}")
    logger.info("loaded %s index of %d vectors from %s", factory, index.ntotal, index_path)
    return index, factory


def _to_cpu(index, placement: Placement = CPU):
    """One CPU index equal to ``index`` (a GPU index, or IndexShards of CPU parts merged in order)."""
    import faiss

    if placement.on_gpu:
        return faiss.index_gpu_to_cpu(index)  # merges IndexShards of GPU parts, shifting ids
    shards = faiss.downcast_index(index)
    if not isinstance(shards, faiss.IndexShards):
        return index
    parts = [faiss.downcast_index(shards.at(i)) for i in range(shards.count())]
    merged = faiss.clone_index(parts[0])
    for part in parts[1:]:
        if isinstance(merged, faiss.IndexIVF):
            merged.merge_from(faiss.clone_index(part), merged.ntotal)  # successive ids
        elif isinstance(merged, faiss.IndexFlatCodes):
            merged.merge_from(faiss.clone_index(part), 0)
        else:
            raise NotImplementedError(f"cannot merge the parts of a {type(merged).__name__} to save it")
    return merged


# --------------------------------------------------------------------------- helpers
def _is_flat(factory: str | None) -> bool:
    return factory is not None and factory.replace(" ", "").lower() == "flat"


def _faiss_num_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _gpu_resources(device: int):
    import faiss

    if device not in _GPU_RESOURCES:
        _GPU_RESOURCES[device] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[device]


def _read_ids(shard: EmbeddingShard) -> np.ndarray:
    """A shard's docids as one bytes array (no Python string per passage kept)."""
    with open(shard.name + ".ids", "rb") as f:
        ids = f.read().split(b"\n")
    if ids and ids[-1] == b"":
        ids.pop()
    if len(ids) != shard.count:
        raise InputError(shard.name + ".ids", None, f"{len(ids)} ids, but {shard.json_path} says count={shard.count}")
    return np.array(ids, dtype=bytes) if ids else np.array([], dtype="S1")
