"""Validation during cross-encoder training: held-out queries' first-stage top-k re-ranked by the
re-ranker being trained (the bi-encoder's counterpart is :mod:`densir.validation`).

    python -m densir.driver.train_reranker ... --eval_strategy steps --eval_steps 50 \\
        --eval_run DIR/bm25.heldout.run --eval_queries DIR/queries.heldout.jsonl \\
        --eval_qrels DIR/qrels.heldout.tsv [--eval_corpus DIR/corpus.jsonl] [--eval_depth 100] \\
        [--load_best_model_at_end --metric_for_best_model nDCG@10] [--report_to tensorboard]

Reads  ``--eval_run`` (a TREC run of the first stage: BM25, round 2, a fused run), once, when
       training starts: its queries that are in ``--eval_queries``, each cut to its first
       ``--eval_depth`` hits in file order (the run's ranking); the texts those hits need from
       ``--eval_corpus`` (default ``corpus.jsonl`` beside the queries); ``--eval_qrels``.
Logs   ``eval_nDCG@10``, ``eval_MRR@10`` (``--eval_metrics``), ``eval_runtime`` as :mod:`densir.validation`.

What an evaluation is: exactly what ``python -m densir.driver.rerank`` (rerank.sh's re-ranking
stage) and ``tools/evaluate.py`` do on a saved model, in the trainer's process: the pairs scored
by :func:`densir.reranker.rerank.rerank_run` (the driver's chunking and length-sorted batches of
``--per_device_eval_batch_size`` pairs, 64 by default as the driver's ``--batch_size``; eval mode,
no grad, the training's ``--max_len`` and precision), written as a TREC run (six decimals, so
ties fall as they fall in the driver's file), read back by :func:`densir.io.read_run` and
scored by :func:`densir.evaluation.evaluate` (ir_measures; a judged eval query the run lacks
counts 0). So the logged figures equal ``densir.driver.rerank --depth <eval_depth>`` on the same
run (holding the eval queries) + ``tools/evaluate.py`` on a checkpoint of the same step.
Under DDP rank 0 evaluates and the metrics are broadcast (:meth:`densir.training.DensirTrainer.evaluate`).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import torch

from densir.precision import PrecisionName
from densir.reranker.arguments import RERANK_VALIDATION_METRICS
from densir.validation import Validator

logger = logging.getLogger(__name__)


class RerankValidator(Validator):
    """Held-out queries, their qrels, the first stage's hits and the texts, re-ranked by the re-ranker being trained.

    ``run``: ``{qid: [(docid, score), ...]}`` (each query's hits to re-rank, in the run's order);
    ``queries``/``passages``: the texts (``passages`` title and text joined by
    :func:`densir.formats.passage_text`, as the driver joins them). ``__len__`` is the number of
    queries re-ranked.
    """

    def __init__(self, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                 run: Mapping[str, Sequence[tuple[str, float]]], passages: Mapping[str, str],
                 metrics: Sequence[str] = RERANK_VALIDATION_METRICS, batch_size: int = 64):
        if not run:
            raise ValueError("no eval query to re-rank")
        self.queries, self.qrels, self.run, self.passages = dict(queries), qrels, dict(run), passages
        self.metrics, self.batch_size = list(metrics), batch_size

    @classmethod
    def from_files(cls, run_path, queries_path, qrels_path, corpus_path=None, depth: int = 100,
                   **kwargs) -> "RerankValidator":
        """Read the run's eval queries (cut to ``depth``), their texts and the qrels (see the module docstring)."""
        from densir.formats import read_qrels, read_queries
        from densir.io import InputError, iter_run
        from densir.reranker.rerank import load_texts
        from densir.validation import eval_corpus

        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        corpus_path = eval_corpus(queries_path, corpus_path)
        wanted = read_queries(queries_path)
        run, in_file = {}, 0
        for qid, hits in iter_run(run_path):
            in_file += 1
            if qid in wanted:
                run[qid] = hits[:depth]
        if not in_file:
            raise InputError(run_path, None, "run is empty")
        if not run:
            raise InputError(run_path, None, f"the run has no query of {queries_path}: is it the run of the eval "
                                             "queries?")
        queries, passages = load_texts(run_path, run, queries_path, corpus_path)
        qrels = read_qrels(qrels_path)
        judged = {q for q in wanted if any(r > 0 for r in qrels.get(q, {}).values())}
        missing = judged - set(run)
        if missing:
            logger.warning("rerank validation: %d judged eval queries are not in %s; they count as 0",
                           len(missing), run_path)
        qrels = {q: qrels[q] for q in wanted if q in qrels}
        logger.info("rerank validation: %d queries of %s (%d judged), top %d of %s: %d pairs", len(run),
                    queries_path, len(judged), depth, run_path, sum(len(h) for h in run.values()))
        return cls(queries, qrels, run, passages, **kwargs)

    def __len__(self) -> int:
        return len(self.run)

    def ranking(self, reranker, device: torch.device | str = "cpu", precision: PrecisionName = "fp32") -> dict:
        """The re-ranked run as ``densir.driver.rerank`` writes it and ``tools/evaluate.py`` reads it;
        ``reranker`` (a :class:`densir.reranker.modeling.CrossEncoderReranker`) is already on ``device``."""
        from densir.io import read_run
        from densir.reranker.rerank import rerank_run

        with tempfile.TemporaryDirectory(prefix="densir-rerank-validation-") as tmp:
            path = Path(tmp, "eval.run")
            rerank_run(reranker, self.run, self.queries, self.passages, path, batch_size=self.batch_size,
                       precision=precision)
            return read_run(path)
