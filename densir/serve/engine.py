"""What the server does with a request, apart from HTTP: checks, batching, and the models' calls.

:class:`Service` holds one :class:`densir.search.searcher.Searcher` (encoder, shards, corpus
texts, optional BM25 index and :class:`~densir.reranker.modeling.CrossEncoderReranker`), loaded once, and one
:class:`densir.serve.batching.Batcher` whose handlers call the searcher on a whole batch:

* ``search``: the batch's queries that share ``(first stage, rerank_depth, interpolate)`` go to
  one :meth:`Searcher.search_batch` call (one encoder forward, one cross-encoder forward), at a
  fixed first-stage depth (``--depth``, run.sh's ``EVAL_DEPTH``) and the batch's largest ``k``;
  each request gets its own top ``k`` of that list, which is what it would get alone (``k`` only
  cuts a ranked list).
* ``rerank``: every (query, document) pair of the batch in one :meth:`CrossEncoderReranker.predict`, each
  request's documents then ordered as :meth:`CrossEncoderReranker.rank` orders them (score desc, ties in
  input order): ``[{"corpus_id", "score"[, "text"]}]``.
* ``embed``: the batch's texts in one :func:`densir.retriever.encode.encode_texts` call, queries
  as the searcher encodes them, passages as the encode stage did (the shards' ``max_len``).

Per-stage timings come from the searcher itself (:class:`TimedSearcher` times its public
``retrieve``/``encode_queries`` and the re-ranker's ``predict``); they are the times of the batch
a request ran in, and each request also gets its own queue wait.

Bad requests raise :class:`RequestError` (an HTTP status and one message naming the field or the
limit) before anything is queued, so one bad request never fails a batch.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from densir.ranking import rank_documents
from densir.search.searcher import Searcher
from densir.serve.batching import Batcher

if TYPE_CHECKING:
    from densir.reranker.modeling import CrossEncoderReranker

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the server refuses: ``status`` (4xx) and one message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Limits:
    """What one request may ask for; each is a ``--flag`` of ``python -m densir.serve``."""

    max_body_bytes: int = 1 << 20
    max_query_chars: int = 1000
    max_queries: int = 64  # queries in one /search request, texts in one /embed request
    max_k: int = 100
    max_rerank_depth: int = 100
    max_documents: int = 1000  # documents in one /rerank request
    max_document_chars: int = 20000
    request_timeout: float = 60.0  # seconds, queue wait included

    def check(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"--{name} must be > 0, got {value}")


# --------------------------------------------------------------------------- timed searcher
class TimedSearcher(Searcher):
    """A :class:`Searcher` that records how long its stages took and the first stage's ranking.

    Only public methods are wrapped (``retrieve``, ``encode_queries``, the re-ranker's ``predict``);
    retrieval, fusion and re-ranking are the searcher's own. Used by one worker thread at a time.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_stages()

    def reset_stages(self) -> None:
        self.stages = {"encode": 0.0, "first_stage": 0.0, "rerank": 0.0}
        self.first_stage: list[list[tuple[str, float]]] = []
        self._retrieving = False

    def retrieve(self, queries, depth, retriever="dense"):
        if getattr(self, "_retrieving", False):  # the hybrid stage's own dense and BM25 calls
            return super().retrieve(queries, depth, retriever)
        self._retrieving = True
        t0 = time.perf_counter()
        try:
            out = super().retrieve(queries, depth, retriever)
        finally:
            self._retrieving = False
        self.stages["first_stage"] += time.perf_counter() - t0
        self.first_stage = out
        return out

    def encode_queries(self, queries):
        t0 = time.perf_counter()
        out = super().encode_queries(queries)
        self.stages["encode"] += time.perf_counter() - t0
        return out


class _TimedReranker:
    """The searcher's re-ranker (a :class:`~densir.reranker.modeling.CrossEncoderReranker`), its ``predict``
    timed into the searcher's stages."""

    def __init__(self, reranker: CrossEncoderReranker, searcher: TimedSearcher):
        self.reranker, self.searcher = reranker, searcher

    def predict(self, pairs, **kwargs):
        t0 = time.perf_counter()
        out = self.reranker.predict(pairs, **kwargs)
        self.searcher.stages["rerank"] += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        return getattr(self.reranker, name)


# --------------------------------------------------------------------------- the service
class Service:
    def __init__(self, searcher: TimedSearcher, limits: Limits | None = None, depth: int = 100,
                 rerank_depth: int = 100, interpolate: float | None = None, max_batch: int = 64,
                 max_wait_ms: float = 5.0, max_queue: int = 256, passage_max_len: int | None = None,
                 model_name: str = "densir"):
        self.searcher = searcher
        self.model_name = model_name
        self.limits = limits or Limits()
        self.limits.check()
        self.depth = depth
        self.reranker: CrossEncoderReranker | None = searcher.reranker
        if self.reranker is not None:
            searcher.reranker = _TimedReranker(self.reranker, searcher)
        self.default_rerank_depth = rerank_depth if self.reranker is not None else 0
        self.interpolate = interpolate
        self.passage_max_len = passage_max_len or int(searcher.shards[0].meta.get("max_len") or searcher.q_max_len)
        searcher.reset_stages()
        self.batcher = Batcher({"search": self._search_batch, "rerank": self._rerank_batch,
                                "embed": self._embed_batch}, max_batch=max_batch, max_wait_ms=max_wait_ms,
                               max_queue=max_queue, on_stop=_detach_jvm)
        self.ready = threading.Event()
        self.started = time.time()

    # ------------------------------------------------------------------ checks (before queueing)
    def _text(self, value, what: str, limit: int, flag: str) -> str:
        if not value.strip():
            raise RequestError(422, f"{what} is empty")
        if len(value) > limit:
            raise RequestError(413, f"{what} is {len(value)} characters, over the limit of {limit} ({flag})")
        return value

    def _texts(self, values, what: str, max_items: int, flag: str, max_chars: int, chars_flag: str) -> list[str]:
        values = [values] if isinstance(values, str) else list(values)
        if not values:
            raise RequestError(422, f"{what}: the list is empty")
        if len(values) > max_items:
            raise RequestError(413, f"{what}: {len(values)} items, over the limit of {max_items} ({flag})")
        return [self._text(v, f"{what}[{i}]" if len(values) > 1 else what, max_chars, chars_flag)
                for i, v in enumerate(values)]

    def search_job(self, queries, k: int = 10, rerank_depth: int | None = None, hybrid: bool = False,
                   interpolate: float | None | str = "default"):
        """Check a /search request and queue it; returns the batcher's job."""
        lim = self.limits
        queries = self._texts(queries, "query", lim.max_queries, "--max_queries", lim.max_query_chars,
                              "--max_query_chars")
        if k < 1:
            raise RequestError(422, f"k must be >= 1, got {k}")
        if k > lim.max_k:
            raise RequestError(422, f"k={k} is over the limit of {lim.max_k} (--max_k)")
        if rerank_depth is None:
            rerank_depth = self.default_rerank_depth
        if rerank_depth < 0:
            raise RequestError(422, f"rerank_depth must be >= 0, got {rerank_depth}")
        if rerank_depth and self.reranker is None:
            raise RequestError(422, "rerank_depth > 0 needs a re-ranker: the server was started without --reranker")
        if rerank_depth > lim.max_rerank_depth:
            raise RequestError(422, f"rerank_depth={rerank_depth} is over the limit of {lim.max_rerank_depth} "
                               "(--max_rerank_depth)")
        if rerank_depth and k > rerank_depth:
            raise RequestError(422, f"k={k} is more than rerank_depth={rerank_depth}: only re-ranked hits are returned")
        if interpolate == "default":
            interpolate = self.interpolate if rerank_depth else None
        if interpolate is not None:
            if not rerank_depth:
                raise RequestError(422, "interpolate needs re-ranking (rerank_depth > 0)")
            if not 0.0 <= interpolate <= 1.0:
                raise RequestError(422, f"interpolate must be in [0, 1], got {interpolate}")
        if hybrid and self.searcher.bm25_index is None:
            raise RequestError(422, "hybrid needs BM25: the server was started without --bm25_index")
        key = ("hybrid" if hybrid else "dense", rerank_depth, interpolate)
        return self.batcher.submit("search", key, (queries, k), size=len(queries))

    def rerank_job(self, query: str, documents: Sequence[str], top_k: int | None = None,
                   return_documents: bool = False):
        if self.reranker is None:
            raise RequestError(422, "no re-ranker: the server was started without --reranker")
        lim = self.limits
        query = self._text(query, "query", lim.max_query_chars, "--max_query_chars")
        if not documents:
            raise RequestError(422, "documents: the list is empty")
        if len(documents) > lim.max_documents:
            raise RequestError(413, f"documents: {len(documents)} items, over the limit of {lim.max_documents} "
                               "(--max_documents)")
        for i, d in enumerate(documents):
            if len(d) > lim.max_document_chars:
                raise RequestError(413, f"documents[{i}] is {len(d)} characters, over the limit of "
                                   f"{lim.max_document_chars} (--max_document_chars)")
        if top_k is not None and top_k < 1:
            raise RequestError(422, f"top_k must be >= 1, got {top_k}")
        return self.batcher.submit("rerank", None, (query, list(documents), top_k, return_documents),
                                   size=1)

    def embed_job(self, texts, input_type: str = "query"):
        if input_type not in ("query", "passage"):
            raise RequestError(422, f"input_type must be 'query' or 'passage', got {input_type!r}")
        lim = self.limits
        texts = self._texts(texts, "input", lim.max_queries, "--max_queries", lim.max_document_chars,
                            "--max_document_chars")
        return self.batcher.submit("embed", input_type, texts, size=len(texts))

    # ------------------------------------------------------------------ batch handlers (worker thread)
    def _search_batch(self, key, payloads: list) -> list:
        retriever, rerank_depth, interpolate = key
        queries = [q for qs, _ in payloads for q in qs]
        k = max(k for _, k in payloads)
        s = self.searcher
        s.reset_stages()
        t0 = time.perf_counter()
        results = s.search_batch(queries, k=k, rerank_depth=rerank_depth, interpolate=interpolate,
                                 retriever=retriever, depth=max(self.depth, rerank_depth, k))
        total = time.perf_counter() - t0
        first = s.first_stage
        stages = {"encode": s.stages["encode"], "first_stage": s.stages["first_stage"], "rerank": s.stages["rerank"]}
        stages["texts"] = max(total - stages["first_stage"] - stages["rerank"], 0.0)
        stages["batch"] = total
        ms = {name: round(1000.0 * v, 3) for name, v in stages.items()}
        out, i = [], 0
        for qs, kk in payloads:
            answers = []
            for q in qs:
                first_rank = {d: r for r, (d, _) in enumerate(first[i], 1)}
                answers.append({"query": q, "hits": [dict(h.to_dict(), first_rank=first_rank.get(h.docid))
                                                     for h in results[i][:kk]]})
                i += 1
            out.append({"results": answers, "timings_ms": dict(ms), "batch_queries": len(queries),
                        "retriever": retriever, "rerank_depth": rerank_depth, "interpolate": interpolate})
        return out

    def _rerank_batch(self, key, payloads: list) -> list:
        pairs = [(q, d) for q, docs, _, _ in payloads for d in docs]
        t0 = time.perf_counter()
        scores = self.reranker.predict(pairs)
        ms = round(1000.0 * (time.perf_counter() - t0), 3)
        out, i = [], 0
        for _, docs, top_k, return_documents in payloads:
            mine = scores[i:i + len(docs)]
            i += len(docs)
            out.append({"results": rank_documents(mine, docs, top_k, return_documents), "timings_ms": {"rerank": ms},
                        "batch_pairs": len(pairs)})
        return out

    def _embed_batch(self, input_type, payloads: list) -> list:
        from densir.retriever.encode import encode_texts

        texts = [t for ts in payloads for t in ts]
        t0 = time.perf_counter()
        s = self.searcher
        if input_type == "query":
            vectors = s.encode_queries(texts)
            max_len = s.q_max_len
        else:
            vectors = encode_texts(s.encoder, texts, "passage", self.passage_max_len, s.batch_size, s.precision,
                                   s.device)
            max_len = self.passage_max_len
        tokens = [min(len(ids), max_len) for ids in s.encoder.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        ms = round(1000.0 * (time.perf_counter() - t0), 3)
        out, i = [], 0
        for ts in payloads:
            out.append({"embeddings": vectors[i:i + len(ts)], "tokens": sum(tokens[i:i + len(ts)]),
                        "timings_ms": {"encode": ms}})
            i += len(ts)
        return out

    # ------------------------------------------------------------------ start-up
    def warm_up(self) -> None:
        """One request of each kind through the batcher (first calls allocate, JIT, open the index);
        then :attr:`ready` is set."""
        t0 = time.time()
        jobs = [self.search_job(["warm-up query"], k=1), self.embed_job(["warm-up passage"], "passage")]
        if self.searcher.bm25_index is not None:
            jobs.append(self.search_job(["warm-up query"], k=1, hybrid=True))
        for job in jobs:
            job.future.result()
        logger.info("warm-up done in %.1fs", time.time() - t0)
        self.ready.set()

    def close(self) -> None:
        self.batcher.stop()


def _detach_jvm() -> None:
    """The batcher's thread attached itself to the JVM when it searched BM25: detach before it ends."""
    import sys

    if "jnius" in sys.modules:
        try:
            sys.modules["jnius"].detach()
        except Exception:  # noqa: BLE001 - never attached
            pass
