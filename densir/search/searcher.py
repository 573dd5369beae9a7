"""Retrieve & Re-Rank over a round the pipeline already built: a Python API, no re-encoding.

    from densir.search.searcher import Searcher
    searcher = Searcher.from_run_dir("runs/scifact/round2", reranker="runs/scifact/rerank/model")
    for hit in searcher.search("what causes malaria?", k=10, rerank_depth=100):
        print(hit.rank, hit.docid, hit.score, hit.title)

Reads (nothing is written) from one round directory ``R`` of ``scripts/stages.sh``:
  R/model/                  the bi-encoder (``densir_config.json`` marks it complete; without
                            R/model/, as in the zero-shot round, the model the shards name); its
                            weights' fingerprint must match the shards', so a retrained model
                            over old shards is refused instead of searched
  R/enc/corpus.<i>.{npy,ids,json}  every corpus shard (or R/enc/corpus.*), checked complete by
                            :func:`densir.embeddings.resolve_shards`
  R/enc/queries.*.json      if present: the query ``max_len`` and precision run.sh encoded with
  the corpus JSONL          the path in the shards' ``"source"`` (``corpus=`` overrides): titles and
                            texts of hits, and the passages the re-ranker reads
optionally a re-ranker dir (rerank.sh's ``OUT_DIR/rerank/model``) and get_data.sh's
``DATA_DIR/bm25_index`` (a BM25 first stage instead of the dense one).

The first stage is the search stage's :class:`densir.search.faiss_index.ShardIndex`, kept in
memory: exact inner product (``IndexFlatIP``; any FAISS factory string, or an index saved by the
search stage, instead), ranked as run.sh's search and reduce steps rank (each shard's top
``depth`` in :mod:`densir.ranking`'s order, 6 decimals, merged as the reducer merges). So
``search_batch(queries, k)`` over a split's queries, encoded in run.sh's batches
(``batch_size=ENCODE_BATCH``), is the split's run ``R/<split>.run`` hit for hit; one query alone
is padded alone, so its vector can differ in the last float bit, which reorders only passages
whose scores tie to ~1e-6. Re-ranking scores the first stage's top
``rerank_depth`` with the cross-encoder (raw logits) and ranks them as rerank.sh's
``<split>.ce.run`` (:func:`densir.reranker.rerank.score_run`, then logit desc, docid asc, 6 decimals);
``interpolate=alpha`` fuses that 6-decimal run with the first stage as rerank.sh's
``RERANK_ALPHA`` step does (``tools/fuse_runs.py``, :func:`densir.search.fusion.interpolate_hits`),
giving its ``<split>.run``.

Backends: queries are encoded by what made the passage shards (their json's ``backend``,
``quantize``, ``backend_recipe``: an ``--backend openvino --quantize int8`` corpus gets int8
OpenVINO queries, :meth:`densir.retriever.modeling.DenseEncoder.with_backend`), so the vectors
compared always come from the same runtime. ``load_reranker(..., backend=, quantize=)`` runs the
cross-encoder the same way.

Memory: the FAISS index holds the vectors (fp32; ``fp16_storage`` halves it), the docids are one
bytes array. Texts are *not* loaded: the first lookup scans the corpus JSONL once for the byte
offset of every record (8 bytes a record, 70 MB for MS MARCO's 8.8M passages, no JSON parsed);
a hit's text is then one seek and one line parsed. The shards' rows are the corpus records in
round-robin order (record g -> shard g % n), so a row's record is known without a docid map,
and each record read is checked against the docid the shards hold for it.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from densir import ranking
from densir.checks import check_text, check_texts
from densir.embeddings import EmbeddingShard, model_fingerprint, resolve_shards, run_starts
from densir.io import InputError, read_json
from densir.search.faiss_index import ShardIndex

if TYPE_CHECKING:
    from densir.reranker.modeling import CrossEncoderReranker

logger = logging.getLogger(__name__)

RETRIEVERS = ("dense", "bm25", "hybrid")


@dataclass
class Hit:
    """One result. ``score`` is what the list is ranked by: the fused score with ``interpolate``,
    else the re-ranker's logit when re-ranked, else the first stage's score.

    Example: ``hit.to_dict()`` -> ``{"docid": "4983", "rank": 1, "score": 0.71, "title": ..., "text": ...,
    "first_score": 0.71, "rerank_score": None}``.
    """

    docid: str
    rank: int
    score: float
    title: str | None = None
    text: str | None = None
    first_score: float | None = None  # the first stage's (dense inner product, or BM25) score
    rerank_score: float | None = None  # the cross-encoder's raw logit, when re-ranked

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- searcher
class Searcher:
    """Dense (or BM25) first stage over built shards, optional cross-encoder re-ranking (module docstring).

    Args:
        encoder: the :class:`~densir.retriever.modeling.DenseEncoder` that made the shards (checked by
            fingerprint); queries run on the shards' backend.
        passage_shards: the corpus shards (:func:`densir.embeddings.resolve_shards`).
        corpus: the corpus JSONL, for hit titles/texts and re-ranking (None: ids and scores only).
        reranker: a :class:`~densir.reranker.modeling.CrossEncoderReranker` (:func:`densir.loading.load_reranker`;
            None: no re-ranking).
        bm25_index: get_data.sh's ``bm25_index/``, for ``retriever="bm25"`` and ``"hybrid"``.
        device, q_max_len, precision, batch_size: how queries are encoded (default: as the shards
            and their query shards record).
        index_factory, use_gpu, fp16_storage, nprobe, load_index: the :class:`ShardIndex`'s.

    Most users call :meth:`from_run_dir`. :meth:`search` / :meth:`search_batch` return
    :class:`Hit` lists, best first.

    Example::

        searcher = Searcher.from_run_dir("runs/demo/round2", reranker="runs/demo/rerank/model")
        hits = searcher.search("what causes malaria?", k=10, rerank_depth=100)
        [(h.rank, h.docid, round(h.score, 3)) for h in hits[:2]]
    """

    def __init__(self, encoder, passage_shards: Sequence[EmbeddingShard], corpus=None,
                 reranker: CrossEncoderReranker | None = None, bm25_index=None, device: str | None = None,
                 q_max_len: int | None = None,
                 precision: str | None = None, batch_size: int = 128, index_factory: str = "Flat",
                 use_gpu: bool | None = None, fp16_storage: bool = False, nprobe: int | None = None,
                 load_index=None):
        from densir.loading import inference

        meta = passage_shards[0].meta if passage_shards else {}
        backend = meta.get("backend", "torch")
        # queries run by the runtime that made the passages; a torch one at the recorded (or given) precision
        torch_run = backend == "torch"
        run = inference(device, (precision or meta.get("precision") or "fp32") if torch_run else "fp32", backend,
                        meta.get("quantize", "none"), None if torch_run else meta.get("backend_recipe"))
        self.device = run.device
        self.encoder = encoder.eval().to(self.device)
        self.shards = list(passage_shards)
        _check_encoder(self.encoder, self.shards[0])
        self.q_max_len = q_max_len or _default_q_max_len(self.encoder)
        self.precision = run.precision
        self.encoder = run.prepare(self.encoder, max_len=self.q_max_len)  # after the fingerprint check
        self.batch_size = batch_size
        self.index = ShardIndex(self.shards, index_factory, use_gpu, fp16_storage, nprobe, load_index=load_index)
        self.corpus = _CorpusTexts(corpus, self.shards, self.index.ids) if corpus is not None else None
        self.reranker = reranker
        self.bm25_index = str(bm25_index) if bm25_index is not None else None

    @classmethod
    def from_run_dir(cls, round_dir, corpus=None, reranker=None, bm25_index=None, device: str | None = None,
                     texts: bool = True, **kwargs) -> Searcher:
        """Load round ``round_dir`` (``OUT_DIR/round2``) as run.sh left it; see the module docstring.

        ``corpus``: the corpus JSONL (default: the shards' recorded ``source``); ``texts=False``
        loads none (hits without title/text, no re-ranking). ``reranker``: a dir (see
        :func:`densir.loading.load_reranker`) or a loaded re-ranker. ``bm25_index``: get_data.sh's
        ``bm25_index/`` for ``search(..., retriever="bm25")``. Other keywords go to
        :class:`Searcher` (``q_max_len``, ``precision``, ``index_factory``, ``fp16_storage`` ...).
        """
        from densir.retriever.modeling import CONFIG_NAME, DenseEncoder

        round_dir = Path(round_dir)
        if not round_dir.is_dir():
            raise InputError(round_dir, None, "no such round directory (expected OUT_DIR/<round> with model/ and enc/)")
        enc = round_dir / "enc"
        single = enc / "corpus"
        spec = single if (Path(f"{single}.json").exists() or Path(f"{single}.npy").exists()) else f"{enc}/corpus.*"
        shards = resolve_shards(spec, kind="passage")
        model_dir = round_dir / "model"
        if model_dir.exists():
            if not (model_dir / CONFIG_NAME).exists():
                raise InputError(model_dir / CONFIG_NAME, None, "missing: the round's encoder is not trained yet "
                                 "(run its train stage)")
        else:  # the zero-shot round encodes with MODEL itself, which its shards name
            model_dir = shards[0].meta.get("model")
            if not model_dir:
                raise InputError(round_dir / "model", None, "missing, and the shards name no model")
        queries_meta = _query_shard_meta(enc)
        kwargs.setdefault("q_max_len", queries_meta.get("max_len"))
        kwargs.setdefault("precision", queries_meta.get("precision"))
        if texts:
            corpus = _corpus_path(corpus, shards)
        elif reranker is not None:
            raise ValueError("a re-ranker needs the passage texts: texts=False excludes reranker=")
        if isinstance(reranker, (str, Path)):
            from densir.loading import load_reranker

            reranker = load_reranker(reranker, device=device)
        if bm25_index is not None and not any(Path(bm25_index).glob("segments_*")):
            raise InputError(bm25_index, None, "not a Lucene index (get_data.sh writes DATA_DIR/bm25_index)")
        encoder = DenseEncoder.load(str(model_dir))
        logger.info("%s: %d shard(s), %d passages", round_dir, len(shards), sum(s.count for s in shards))
        return cls(encoder, shards, corpus=corpus if texts else None, reranker=reranker, bm25_index=bm25_index,
                   device=device, **kwargs)

    # ------------------------------------------------------------------ searching
    def search(self, query: str, k: int = 10, rerank_depth: int | None = 100, interpolate: float | None = None,
               retriever: str = "dense", depth: int | None = None) -> list[Hit]:
        """The top ``k`` hits for one query; see :meth:`search_batch`."""
        check_text(query, "query")
        return self.search_batch([query], k, rerank_depth, interpolate, retriever, depth)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, rerank_depth: int | None = 100,
                     interpolate: float | None = None, retriever: str = "dense",
                     depth: int | None = None) -> list[list[Hit]]:
        """The top ``k`` hits of each query, in query order.

        With a re-ranker loaded and ``rerank_depth`` > 0, the first stage's top ``rerank_depth``
        are re-ranked and the top ``k`` of those returned (``k <= rerank_depth``); ``interpolate``
        (``alpha`` in [0, 1]) ranks by ``alpha * z(first) + (1 - alpha) * z(cross-encoder)``.
        ``depth``: first-stage candidates searched (default: ``rerank_depth`` when re-ranking,
        else ``k``). Only exact score ties at the cut depend on it; pass the run's depth (run.sh's
        EVAL_DEPTH) to reproduce its run to the last tie.
        """
        if isinstance(queries, str):
            raise TypeError("search_batch takes a list of queries; use search() for one")
        queries = check_texts(queries, "queries")
        rerank = self.reranker is not None and bool(rerank_depth)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if rerank and k > rerank_depth:
            raise ValueError(f"k={k} is more than rerank_depth={rerank_depth}: only re-ranked hits are returned")
        if rerank and self.corpus is None:
            raise ValueError("re-ranking needs the passage texts (this searcher was loaded with texts=False)")
        if interpolate is not None and not rerank:
            raise ValueError("interpolate needs a re-ranker (and rerank_depth > 0)")
        if interpolate is not None and not 0.0 <= interpolate <= 1.0:
            raise ValueError(f"interpolate must be in [0, 1], got {interpolate}")
        cut = rerank_depth if rerank else k
        if depth is not None and depth < cut:
            raise ValueError(f"depth={depth} is less than the {cut} hits needed")
        first = [hits[:cut] for hits in self.retrieve(queries, depth or cut, retriever)]
        if not rerank:
            return [self._hits([(d, s, s, None) for d, s in hits]) for hits in first]
        return [self._hits(hits[:k]) for hits in self._rerank(queries, first, interpolate)]

    def retrieve(self, queries: Sequence[str], depth: int, retriever: str = "dense") -> list[list[tuple[str, float]]]:
        """First stage only: ``[(docid, score), ...]`` per query, best first, as in run.sh's runs."""
        queries = check_texts(queries, "queries")
        if retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {retriever!r}")
        if not queries:
            return []
        if retriever == "hybrid":
            return self.retrieve_hybrid(queries, depth)
        if retriever == "bm25":
            if self.bm25_index is None:
                raise ValueError("retriever='bm25' needs bm25_index= (get_data.sh's DATA_DIR/bm25_index)")
            from densir.search import bm25

            keyed = {str(i): q for i, q in enumerate(queries)}
            run = dict(bm25.search(self.bm25_index, keyed, k=depth, remove_query=False))
            return [run.get(str(i), []) for i in range(len(queries))]
        return list(self.index.search(self.encode_queries(queries), depth))

    # the hybrid first stage's settings, run.sh's defaults (scripts/stages.sh: HYBRID=rrf, HYBRID_K=60);
    # bm25_depth: BM25 hits fused (get_data.sh's EVAL_DEPTH, 1000; None: the dense depth). Set on an instance.
    hybrid_fusion = MappingProxyType({"method": "rrf", "rrf_k": 60.0, "weights": None, "norm": "minmax",
                                      "bm25_depth": None})

    def retrieve_hybrid(self, queries: Sequence[str], depth: int) -> list[list[tuple[str, float]]]:
        """The dense top ``depth`` fused with the BM25 top ``hybrid_fusion["bm25_depth"]`` as run.sh's
        hybrid run fuses them (:func:`densir.search.fusion.fuse`, ``tools/fuse_runs.py``), top ``depth``;
        BM25 scores rounded as its run file holds them (ties made by rounding rank as there)."""
        from densir.search.fusion import fuse

        opts = dict(self.hybrid_fusion)
        bm25_depth = opts.pop("bm25_depth", None) or depth
        keys = [str(i) for i in range(len(queries))]
        bm25 = [[(d, ranking.round_score(s)) for d, s in hits] for hits in self.retrieve(queries, bm25_depth, "bm25")]
        runs = [dict(zip(keys, self.retrieve(queries, depth, "dense"))), dict(zip(keys, bm25))]
        fused = fuse(runs, opts.pop("method"), depth=depth, **opts)
        return [fused.get(key, []) for key in keys]

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query embeddings [n, dim] float32, as run.sh's encode stage makes them."""
        queries = check_texts(queries, "queries")
        from densir.retriever.encode import encode_texts

        return encode_texts(self.encoder, list(queries), "query", self.q_max_len, self.batch_size,
                            self.precision, self.device)

    def document(self, docid: str) -> tuple[str, str]:
        """``(title, text)`` of a passage."""
        if self.corpus is None:
            raise ValueError("no corpus texts loaded (texts=False)")
        return self.corpus.get([docid])[docid]

    # ------------------------------------------------------------------ helpers
    def _rerank(self, queries, first, interpolate):
        """Re-rank each query's first-stage hits: ``[(docid, score, first, ce), ...]`` best first.

        As rerank.sh: the cross-encoder run is what ``densir.driver.rerank`` writes
        (:func:`~densir.reranker.rerank.score_run`, ranked, 6 decimals), and the fused run is
        ``tools/fuse_runs.py``'s :func:`~densir.search.fusion.interpolate_hits` of the first-stage
        run and that 6-decimal run, ranked as ``write_run`` writes it.
        """
        from densir.formats import passage_text
        from densir.reranker.rerank import score_run
        from densir.search.fusion import interpolate_hits

        docs = self.corpus.get({d for hits in first for d, _ in hits})
        texts = {d: passage_text(*docs[d]) for d in docs}
        scored = score_run(self.reranker, dict(enumerate(first)), dict(enumerate(queries)), texts,
                           self.reranker.batch_size, self.reranker.precision)
        out = []
        for (_, ce), hits in zip(scored, first):
            ce = [(d, ranking.round_score(s)) for d, s in ranking.rank(ce)]
            ranked = ce if interpolate is None else ranking.rank(interpolate_hits(hits, ce, interpolate))
            first_of, ce_of = dict(hits), dict(ce)
            out.append([(d, s, first_of[d], ce_of[d]) for d, s in ranked])
        return out

    def _hits(self, ranked) -> list[Hit]:
        docs = self.corpus.get([d for d, *_ in ranked]) if self.corpus is not None else {}
        return [Hit(docid=d, rank=r, score=s, title=docs.get(d, (None, None))[0], text=docs.get(d, (None, None))[1],
                    first_score=f, rerank_score=c)
                for r, (d, s, f, c) in enumerate(ranked, 1)]


# --------------------------------------------------------------------------- corpus texts
class _CorpusTexts:
    """Titles and texts of passages, read on demand from the corpus JSONL the shards were encoded from.

    Built on first use: one pass over the file records each record's byte offset (blank lines
    skipped, as :func:`densir.io.iter_jsonl` does). Shard row -> corpus record follows the encode
    stage's round-robin split, so no docid -> record map is needed; a docid -> row lookup is a
    binary search over the sorted docids (for BM25 hits).
    """

    def __init__(self, path, shards, ids: np.ndarray):
        self.path = str(path)
        self._ids = ids
        starts = np.cumsum([0] + [s.count for s in shards])
        parts = [_records_of(s, ids[a:b]) for s, a, b in zip(shards, starts[:-1], starts[1:])]
        self._record_of_row = np.concatenate([r for r, _ in parts])
        self._records = sum(n for _, n in parts)  # corpus records the shards hold (rows, unless chunked)
        self._offsets = None
        self._sorted = None

    def get(self, docids) -> dict[str, tuple[str, str]]:
        from densir.io import require

        self._build()
        docids = sorted(set(docids))
        out = {}
        with open(self.path, "rb") as f:
            for docid in docids:
                record = int(self._record_of_row[self._row(docid)])
                f.seek(int(self._offsets[record]))
                raw = f.readline()
                try:
                    obj = json.loads(raw)
                    if not isinstance(obj, dict):
                        raise ValueError("not a JSON object")
                except ValueError as e:  # JSONDecodeError is a ValueError
                    raise InputError(self.path, self._line_of(record), f"invalid JSON ({e})") from None
                if "text" not in obj:
                    raise InputError(self.path, self._line_of(record), "missing", "text")
                if str(obj.get("docid")) != docid:
                    raise InputError(self.path, None, f"record {record + 1} is docid {obj.get('docid')!r}, but the "
                                     f"embedding shards hold {docid!r} there: not the corpus that was encoded", "docid")
                out[docid] = (obj.get("title") or "", require(obj, "text", self.path, None, kind=(str, list)))
        return out

    def _line_of(self, record: int) -> int:
        """The 1-based line of a record (error path only: counts the newlines before its offset)."""
        with open(self.path, "rb") as f:
            return f.read(int(self._offsets[record])).count(b"\n") + 1

    def _row(self, docid: str) -> int:
        if self._sorted is None:
            order = np.argsort(self._ids, kind="stable")
            self._sorted = (self._ids[order], order)
        keys, order = self._sorted
        key = docid.encode("utf-8")
        i = int(np.searchsorted(keys, key))
        if i == len(keys) or keys[i] != key:
            raise InputError(self.path, None, f"docid {docid!r} (a BM25 hit?) is not in the embedding shards: "
                             "the BM25 index and the shards were built from different corpora", "docid")
        return int(order[i])

    def _build(self) -> None:
        if self._offsets is not None:
            return
        from array import array

        offsets, pos = array("q"), 0  # 8 bytes a record, no Python int per line kept
        with open(self.path, "rb") as f:
            for line in f:
                if line.strip():
                    offsets.append(pos)
                pos += len(line)
        if len(offsets) != self._records:
            raise InputError(self.path, None, f"{len(offsets)} records, but the embedding shards hold "
                             f"{self._records}: not the corpus that was encoded")
        self._offsets = np.frombuffer(offsets, dtype=np.int64)


def _records_of(shard: EmbeddingShard, ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Corpus record index of each row of a shard (piece): record g -> shard g % n, rank by every W-th;
    and how many records the piece holds. A chunked piece's windows of one passage (adjacent rows,
    one docid, ``ids``) are one record."""
    m = shard.meta
    n, w = int(m.get("num_shards", 1)), int(m.get("world_size", 1))
    start = int(m.get("shard_index", 0)) + int(m.get("rank", 0)) * n
    if shard.chunked:
        ordinal = np.zeros(len(ids), dtype=np.int64)
        ordinal[run_starts(ids)[1:]] = 1
        ordinal = np.cumsum(ordinal)
        return start + ordinal * n * w, len(run_starts(ids))
    return start + np.arange(shard.count, dtype=np.int64) * n * w, shard.count


# --------------------------------------------------------------------------- loading helpers
def _check_encoder(encoder, shard: EmbeddingShard) -> None:
    """The encoder must be the one the shards were made with (weights fingerprint, pooling, normalize, dim)."""
    models = (encoder.q_model,) if not encoder.config.untied else (encoder.q_model, encoder.p_model)
    mine = {"model_fingerprint": model_fingerprint(*models), "pooling": encoder.config.pooling,
            "normalize": bool(encoder.config.normalize), "dim": encoder.p_model.config.hidden_size}
    for key, value in mine.items():
        if key in shard.meta and shard.meta[key] != value:
            raise InputError(shard.json_path, None, f"{key}={shard.meta[key]!r}, but the round's model has {value!r}: "
                             "the shards were encoded by another model (re-run the round's encode stage)", key)


def _query_shard_meta(enc: Path) -> dict:
    """max_len and precision of the round's query shards (run.sh's Q_MAX_LEN, PRECISION), if any."""
    metas = []
    for p in sorted(enc.glob("queries*.json")):
        try:
            metas.append(read_json(p))
        except InputError:
            continue
    metas = [m for m in metas if m.get("kind") == "query"]
    if not metas:
        return {}
    if len({(m.get("max_len"), m.get("precision")) for m in metas}) > 1:
        logger.warning("query shards in %s disagree on max_len/precision; using %s's", enc, metas[0])
    return {k: metas[0].get(k) for k in ("max_len", "precision")}


def _default_q_max_len(encoder) -> int:
    """What ``densir.driver.encode`` uses without ``--q_max_len``: the checkpoint's, else 32."""
    from densir.retriever.encode import resolve_max_len

    return resolve_max_len("query", None, encoder.config.max_seq_length)


def _corpus_path(corpus, shards) -> str:
    if corpus is None:
        sources = {s.meta.get("source") for s in shards}
        if len(sources) != 1 or None in sources:
            raise InputError(shards[0].json_path, None, "the shards record no single corpus path: pass corpus=",
                             "source")
        corpus = sources.pop()
    if not Path(corpus).is_file():
        raise InputError(corpus, None, "no such corpus file (the shards' recorded source; pass corpus= if it moved)")
    return str(corpus)
