"""Bi-encoder batches: :class:`TrainCollator` turns :class:`densir.dataset.TrainDataset` items into
``{"query": tensors, "passage": tensors}`` (+ ``"scores"``: teacher scores, when the items carry them)."""
from __future__ import annotations

import torch

from densir.tokenization import tokenize_batch

TEACHER_SCORES_KEY = "scores"  # the item key: one teacher score per passage, aligned with item["passages"]


class TrainCollator:
    """Batch of :class:`TrainDataset` items -> ``{"query": tensors, "passage": tensors}``.

    Tokenizes on the fly with :func:`tokenize_batch` (fast tokenizer, dynamic padding to the
    longest item; pre-tokenized ids accepted). Passages come group by group, positive first, the
    layout :class:`densir.retriever.loss.ContrastiveLoss` expects.

    Items carrying teacher scores (``item["scores"]``: one float per passage, in the order of
    ``item["passages"]``) add ``"scores"``: a float32 ``[queries, passages per query]`` tensor,
    what the distillation losses of :mod:`densir.retriever.loss` take. Either every item of a
    batch carries them or none does.
    """

    def __init__(self, tokenizer, q_max_len: int = 32, p_max_len: int = 128, query_prefix: str = "",
                 passage_prefix: str = "", pad_to_multiple_of: int | None = None):
        self.tokenizer, self.q_max_len, self.p_max_len = tokenizer, q_max_len, p_max_len
        self.query_prefix, self.passage_prefix = query_prefix or "", passage_prefix or ""
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict]) -> dict:
        queries = [it["query"] for it in items]
        passages = [p for it in items for p in it["passages"]]
        batch = {
            "query": tokenize_batch(self.tokenizer, queries, self.q_max_len, self.query_prefix, self.pad_to_multiple_of),
            "passage": tokenize_batch(self.tokenizer, passages, self.p_max_len, self.passage_prefix,
                                      self.pad_to_multiple_of),
        }
        scores = teacher_scores(items)
        if scores is not None:
            batch[TEACHER_SCORES_KEY] = scores
        return batch


def teacher_scores(items: list[dict]) -> torch.Tensor | None:
    """``[len(items), n]`` float32 teacher scores of the items' passages, or None when no item has any."""
    carried = [it.get(TEACHER_SCORES_KEY) is not None for it in items]
    if not any(carried):
        return None
    if not all(carried):
        raise ValueError(f"{carried.count(False)} of {len(items)} items in a batch carry no teacher scores "
                         f"({TEACHER_SCORES_KEY!r}): score every train group, or none")
    for it in items:
        if len(it[TEACHER_SCORES_KEY]) != len(it["passages"]):
            raise ValueError(f"an item has {len(it[TEACHER_SCORES_KEY])} teacher scores for "
                             f"{len(it['passages'])} passages")
    return torch.tensor([[float(s) for s in it[TEACHER_SCORES_KEY]] for it in items], dtype=torch.float32)
