"""Cross-encoder batches: :class:`RerankCollator` turns :class:`densir.dataset.TrainDataset` items
into ``B * n`` (query, passage) pairs, their ``[B, n]`` relevance and, for a distillation loss,
the ``[B, n]`` teacher scores."""
from __future__ import annotations

import torch

from densir.io import InputError
from densir.tokenization import tokenize_pairs


class RerankCollator:
    """TrainDataset items -> ``{"pairs": tensors [B*n, L], "relevance": [B, n]}`` (+ ``"teacher": [B, n]``).

    Pairs come group by group, positive first, tokenized by
    :func:`densir.tokenization.tokenize_pairs`, the path re-ranking uses too. ``relevance`` is
    each passage's graded label as the item carries it (the group's per-passage ``"relevance"``,
    else 1 for the positive and 0 for the negatives; an item without ``"relevance"`` reads the
    same way). With ``teacher=True`` (a loss with ``needs_teacher``, see
    :func:`densir.reranker.losses.needs_teacher`) ``teacher`` holds each passage's teacher
    ``"score"``; a passage without one is an :class:`densir.io.InputError` naming the group's
    file and line.
    """

    def __init__(self, tokenizer, max_len: int, pad_to_multiple_of: int | None = None, teacher: bool = False):
        self.tokenizer, self.max_len, self.pad_to_multiple_of = tokenizer, max_len, pad_to_multiple_of
        self.teacher = teacher

    def __call__(self, items: list[dict]) -> dict:
        n = len(items[0]["passages"])
        if any(len(it["passages"]) != n for it in items):
            raise ValueError("every group of a batch must have the same number of passages")
        queries = [it["query"] for it in items for _ in it["passages"]]
        passages = [p for it in items for p in it["passages"]]
        batch = {"pairs": tokenize_pairs(self.tokenizer, queries, passages, self.max_len, self.pad_to_multiple_of),
                 "relevance": torch.tensor([it.get("relevance") or [1.0] + [0.0] * (n - 1) for it in items],
                                           dtype=torch.float32)}
        if self.teacher:
            batch["teacher"] = torch.tensor([_teacher_scores(it) for it in items], dtype=torch.float32)
        return batch


def _teacher_scores(item: dict) -> list[float]:
    scores = item.get("score") or [None] * len(item["passages"])
    for j, s in enumerate(scores):
        if s is None:
            path, line = item.get("where") or ("train groups", None)
            docids = item.get("docids") or [None] * len(scores)
            role = "the positive" if j == 0 else "a negative"
            raise InputError(path, line, f"{role} ({docids[j]!r}) has no teacher 'score': a distillation loss "
                                         "needs one on every passage (write them with tools/score_groups.py)")
    return scores
