"""Validation during bi-encoder training: held-out queries searched with the encoder being trained.

    python -m densir.driver.train ... --eval_strategy steps --eval_steps 50 \\
        --eval_queries DIR/queries.heldout.jsonl --eval_qrels DIR/qrels.heldout.tsv \\
        [--eval_corpus DIR/corpus.jsonl] [--eval_sample_bm25_run DIR/bm25.heldout.run --eval_sample_depth 100] \\
        [--load_best_model_at_end --metric_for_best_model nDCG@10] [--report_to tensorboard]

Reads  ``--eval_queries`` (queries JSONL), ``--eval_qrels`` and the corpus (``--eval_corpus``,
       default ``corpus.jsonl`` beside the queries), once, when training starts. With
       ``--eval_sample_bm25_run`` only a sample of the corpus is kept: every passage judged for
       an eval query plus the top ``--eval_sample_depth`` passages the run gives each eval query
       (the distractors), in corpus order; for corpora too large to encode at every evaluation.
Logs   at every evaluation ``eval_nDCG@10``, ``eval_MRR@10``, ``eval_Recall@100`` (``--eval_metrics``)
       and ``eval_runtime`` through the Trainer (its log history, ``trainer_state.json``, and any
       ``--report_to`` integration: tensorboard shows them as ``eval/nDCG@10``, ...).

What an evaluation is: exactly the stages a user would run on the saved model, in the trainer's
process: the corpus (or sample) and the queries encoded by
:func:`densir.retriever.encode.encode_texts` (eval mode, no grad, the training's max lengths and
precision, ``--per_device_eval_batch_size``, batches formed as ``densir.driver.encode`` forms
them), searched by :func:`densir.search.faiss_index.search` (exact inner product, top
``--eval_depth``) and scored by :func:`densir.evaluation.evaluate` (ir_measures; a judged query
without hits counts 0). So the logged figures equal ``densir.driver.encode`` +
``densir.faiss_retriever`` + ``tools/evaluate.py`` on a checkpoint of the same step.

Under DDP rank 0 evaluates (every rank holds the same weights) while the others wait in the
broadcast of its metrics, so that every rank takes the same best-model decisions; an evaluation
longer than the process group's timeout (``--ddp_timeout``, 1800 s) needs a sample or a larger timeout.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from densir.embeddings import write_shard
from densir.evaluation import evaluate
from densir.formats import iter_corpus, passage_text, read_qrels, read_queries
from densir.io import InputError, iter_run
from densir.precision import PrecisionName
from densir.ranking import rank

logger = logging.getLogger(__name__)


class Validator:
    """What a trainer validates with (``validator=``, as sentence-transformers passes
    ``evaluator=``): held-out ``qrels`` and the ``metrics`` to log; a family says how its model
    ranks the held-out queries (:meth:`ranking`), :meth:`evaluate` scores that ranking."""

    def ranking(self, model, device: torch.device | str, precision: PrecisionName) -> dict:
        """The run ``{qid: [(docid, score), ...]}`` of ``model`` (in eval mode, on ``device``)."""
        raise NotImplementedError

    def evaluate(self, model, device: torch.device | str = "cpu",
                 precision: PrecisionName = "fp32") -> dict[str, float]:
        """``{metric: value}`` of ``model`` (plus ``runtime`` in seconds); its train/eval mode is restored."""
        start = time.time()
        was_training = model.training
        model.eval()
        try:
            run = self.ranking(model, device, precision)
        finally:
            model.train(was_training)
        scores = evaluate(self.qrels, run, self.metrics)
        return {**{name: float(scores[name]) for name in self.metrics}, "runtime": round(time.time() - start, 3)}


class RetrievalValidator(Validator):
    """Held-out queries, their qrels and the passages to search with the encoder being trained.

    ``passages``: ``(docid, text)`` pairs in corpus order (title and text already joined by
    :func:`densir.formats.passage_text`).
    """

    def __init__(self, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                 passages: Sequence[tuple[str, str]], q_max_len: int, p_max_len: int, depth: int = 100,
                 metrics: Sequence[str] = ("nDCG@10", "MRR@10", "Recall@100"), batch_size: int = 128,
                 encode_chunk_size: int | None = None):
        if not queries:
            raise ValueError("no eval queries")
        if not passages:
            raise ValueError("no passages to search")
        self.queries, self.qrels = dict(queries), qrels
        self.passage_ids = [d for d, _ in passages]
        self.passage_texts = [t for _, t in passages]
        self.q_max_len, self.p_max_len, self.depth = q_max_len, p_max_len, depth
        self.metrics, self.batch_size = list(metrics), batch_size
        self.encode_chunk_size = encode_chunk_size or _encode_chunk_size()

    @classmethod
    def from_files(cls, queries_path, qrels_path, corpus_path=None, sample_run=None, sample_depth: int = 100,
                   **kwargs) -> "RetrievalValidator":
        """Read queries, qrels and the corpus (or its sample, see the module docstring)."""
        queries = read_queries(queries_path)
        qrels = read_qrels(qrels_path)
        corpus_path = eval_corpus(queries_path, corpus_path)
        judged = {q for q, docs in qrels.items() if any(r > 0 for r in docs.values())}
        unsearched = judged - set(queries)
        if unsearched:
            logger.warning("validation: %d judged queries of %s are not in %s; they count as 0", len(unsearched),
                           qrels_path, queries_path)
        keep = None
        if sample_run is not None:
            keep = sample_ids(queries, qrels, sample_run, sample_depth)
        passages = [(docid, passage_text(title, text)) for docid, title, text in iter_corpus(corpus_path)
                    if keep is None or docid in keep]
        if keep is not None:
            missing = len(keep) - len(passages)
            if missing:
                logger.warning("validation: %d sampled docids are not in %s (skipped)", missing, corpus_path)
        logger.info("validation: %d queries of %s, %d judged; %d passages of %s%s", len(queries), queries_path,
                    len(judged & set(queries)), len(passages), corpus_path,
                    f" (judged + top {sample_depth} of {sample_run})" if sample_run is not None else "")
        return cls(queries, qrels, passages, **kwargs)

    def __len__(self) -> int:
        return len(self.queries)

    def ranking(self, encoder, device: torch.device | str = "cpu", precision: PrecisionName = "fp32") -> dict:
        """The top-``depth`` run ``{qid: [(docid, score), ...]}`` of ``encoder`` (in eval mode, on ``device``)."""
        from densir.retriever.encode import encode_texts
        from densir.search.faiss_index import search

        qids = list(self.queries)
        q_vectors = encode_texts(encoder, [self.queries[q] for q in qids], "query", self.q_max_len, self.batch_size,
                                 precision, device)
        # chunked as densir.driver.encode chunks a corpus file: the same batches, the same vectors
        p_vectors = np.concatenate([
            encode_texts(encoder, self.passage_texts[start:start + self.encode_chunk_size], "passage",
                         self.p_max_len, self.batch_size, precision, device)
            for start in range(0, len(self.passage_texts), self.encode_chunk_size)])
        meta = {"model": "densir-validation", "pooling": encoder.config.pooling,
                "normalize": bool(encoder.config.normalize)}
        with tempfile.TemporaryDirectory(prefix="densir-validation-") as tmp:
            # through embedding shards, so the search is densir.faiss_retriever's own, ties and rounding included
            queries = write_shard(Path(tmp, "queries"), qids, q_vectors, dict(meta, kind="query"))
            passages = write_shard(Path(tmp, "corpus"), self.passage_ids, p_vectors, dict(meta, kind="passage"))
            return dict(search([queries], [passages], min(self.depth, len(self.passage_ids))))


def eval_corpus(queries_path, corpus_path=None) -> Path:
    """``corpus_path``, else the ``corpus.jsonl`` beside the queries (get_data.sh's layout)."""
    path = Path(corpus_path if corpus_path is not None else Path(queries_path).parent / "corpus.jsonl")
    if corpus_path is None and not path.is_file():
        raise InputError(queries_path, None, "no eval corpus given and no corpus.jsonl beside it")
    return path


def sample_ids(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], run_path, depth: int) -> set[str]:
    """Every docid judged for one of ``queries`` and the top ``depth`` docids ``run_path`` gives each of them."""
    keep = {docid for q in queries for docid in qrels.get(q, {})}
    seen = set()
    for qid, hits in iter_run(run_path):
        if qid in queries:
            seen.add(qid)
            keep.update(docid for docid, _ in rank(hits, depth))
    if depth and not seen:
        raise InputError(run_path, None, "the run has no eval query: is it the run of the eval queries?")
    return keep


def _encode_chunk_size() -> int:
    from densir.retriever.arguments import EncodeArguments

    return EncodeArguments.__dataclass_fields__["encode_chunk_size"].default
