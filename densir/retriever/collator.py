"""Bi-encoder batches: :class:`TrainCollator` turns :class:`densir.dataset.TrainDataset` items into
``{"query": tensors, "passage": tensors}`` (+ ``"teacher_scores"``, when the items carry them)."""
from __future__ import annotations

import torch

from densir.tokenization import tokenize_batch

ITEM_SCORE_KEY = "score"  # TrainDataset items: one teacher score (or None) per passage, aligned with "passages"
TEACHER_SCORES_KEY = "teacher_scores"  # the batch key: what the distillation losses take


class TrainCollator:
    """Batch of :class:`TrainDataset` items -> ``{"query": tensors, "passage": tensors}``.

    Tokenizes on the fly with :func:`tokenize_batch` (fast tokenizer, dynamic padding to the
    longest item; pre-tokenized ids accepted). Passages come group by group, positive first, the
    layout :class:`densir.retriever.loss.ContrastiveLoss` expects.

    Items carrying teacher scores (``item["score"]``: one float per passage, in the order of
    ``item["passages"]``, as :class:`densir.dataset.TrainDataset` reads them from each passage's
    ``"score"``) add ``"teacher_scores"``: a float32 ``[queries, passages per query]`` tensor,
    what the distillation losses of :mod:`densir.retriever.loss` take. Either every passage of a
    batch has a score or none has (a score of None is no score).
    """

    def __init__(self, tokenizer, q_max_len: int = 32, p_max_len: int = 128, query_prefix: str = "",
                 passage_prefix: str = "", pad_to_multiple_of: int | None = None, eos_id: int | None = None):
        self.tokenizer, self.q_max_len, self.p_max_len = tokenizer, q_max_len, p_max_len
        self.query_prefix, self.passage_prefix = query_prefix or "", passage_prefix or ""
        self.pad_to_multiple_of = pad_to_multiple_of
        self.eos_id = eos_id  # DenseEncoder.eos_id: every text ends with it (decoders, last-token pooling)

    def __call__(self, items: list[dict]) -> dict:
        queries = [it["query"] for it in items]
        passages = [p for it in items for p in it["passages"]]
        batch = {
            "query": tokenize_batch(self.tokenizer, queries, self.q_max_len, self.query_prefix, self.pad_to_multiple_of,
                                    self.eos_id),
            "passage": tokenize_batch(self.tokenizer, passages, self.p_max_len, self.passage_prefix,
                                      self.pad_to_multiple_of, self.eos_id),
        }
        scores = teacher_scores(items)
        if scores is not None:
            batch[TEACHER_SCORES_KEY] = scores
        return batch


def teacher_scores(items: list[dict]) -> torch.Tensor | None:
    """``[len(items), n]`` float32 teacher scores of the items' passages, or None when no passage has one."""
    rows = []
    for it in items:
        scores = it.get(ITEM_SCORE_KEY)
        if scores is not None and len(scores) != len(it["passages"]):
            raise ValueError(f"an item has {len(scores)} teacher scores for {len(it['passages'])} passages")
        rows.append(scores if scores is not None else [None] * len(it["passages"]))
    missing = sum(s is None for row in rows for s in row)
    if missing == sum(len(row) for row in rows):
        return None
    if missing:
        where = next(it.get("where") or it.get("query_id") or it["query"] for it, row in zip(items, rows)
                     if None in row)
        raise ValueError(f"{missing} passages in a batch carry no teacher score (first: the group {where!r}) "
                         f"while others do: score every passage of every train group, or none")
    return torch.tensor(rows, dtype=torch.float32)
