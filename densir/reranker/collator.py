"""Cross-encoder batches: :class:`RerankCollator` turns :class:`densir.dataset.TrainDataset` items
into ``B * n`` (query, passage) pairs, their ``[B, n]`` relevance and, for a distillation loss,
the ``[B, n]`` teacher scores."""
from __future__ import annotations

import random
import zlib

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
    :func:`densir.losses.needs_teacher`) ``teacher`` holds each passage's teacher
    ``"score"``; a passage without one is an :class:`densir.io.InputError` naming the group's
    file and line.

    ``in_batch_negatives=k`` (the multiple-negatives loss, see
    :func:`densir.losses.in_batch_negatives`) appends to each query's group ``k`` passages
    of the *other* groups of the batch (positives and negatives alike; None: all of them), relevance
    0, drawn without replacement by a RNG seeded from the batch's query ids, so a batch always gets
    the same ones: ``[B, n + k]``.
    """

    def __init__(self, tokenizer, max_len: int, pad_to_multiple_of: int | None = None, teacher: bool = False,
                 in_batch_negatives: int | None = 0, eos_id: int | None = None):
        self.tokenizer, self.max_len, self.pad_to_multiple_of = tokenizer, max_len, pad_to_multiple_of
        self.teacher = teacher
        self.in_batch_negatives = in_batch_negatives
        self.eos_id = eos_id  # CrossEncoderReranker.eos_id: a decoder's pairs end with it
        if teacher and in_batch_negatives != 0:
            raise ValueError("in-batch negatives have no teacher scores: a distillation loss takes none")

    def __call__(self, items: list[dict]) -> dict:
        n = len(items[0]["passages"])
        if any(len(it["passages"]) != n for it in items):
            raise ValueError("every group of a batch must have the same number of passages")
        groups = [list(it["passages"]) for it in items]
        relevance = [list(it.get("relevance") or [1.0] + [0.0] * (n - 1)) for it in items]
        if self.in_batch_negatives != 0:
            extra = self._in_batch(items)
            groups = [g + e for g, e in zip(groups, extra)]
            relevance = [r + [0.0] * len(e) for r, e in zip(relevance, extra)]
        queries = [it["query"] for it, g in zip(items, groups) for _ in g]
        passages = [p for g in groups for p in g]
        batch = {"pairs": tokenize_pairs(self.tokenizer, queries, passages, self.max_len, self.pad_to_multiple_of,
                                                self.eos_id),
                 "relevance": torch.tensor(relevance, dtype=torch.float32)}
        if self.teacher:
            batch["teacher"] = torch.tensor([_teacher_scores(it) for it in items], dtype=torch.float32)
        return batch


    def _in_batch(self, items: list[dict]) -> list[list]:
        """For each group, ``in_batch_negatives`` passages of the other groups (all of them for None)."""
        others = [[(j, k) for j, it in enumerate(items) if j != i for k in range(len(it["passages"]))]
                  for i in range(len(items))]
        want = min(len(o) for o in others) if self.in_batch_negatives is None else self.in_batch_negatives
        if want > min(len(o) for o in others):
            raise ValueError(f"in_batch_negatives={want}: a batch of {len(items)} groups of "
                             f"{len(items[0]['passages'])} has only {min(len(o) for o in others)} other passages")
        key = "\0".join(str(it.get("query_id", it["query"])) for it in items)
        rng = random.Random(zlib.crc32(key.encode("utf-8")))
        return [[items[j]["passages"][k] for j, k in (o if self.in_batch_negatives is None else rng.sample(o, want))]
                for o in others]


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
