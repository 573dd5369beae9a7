"""Cross-encoder batches: :class:`RerankCollator` turns :class:`densir.dataset.TrainDataset` items
into ``B * n`` (query, passage) pairs and their ``[B, n]`` relevance."""
from __future__ import annotations

import torch

from densir.tokenization import tokenize_pairs


class RerankCollator:
    """TrainDataset items -> ``{"pairs": tensors [B*n, L], "relevance": [B, n]}``.

    Pairs come group by group, positive first (relevance 1, negatives 0), tokenized by
    :func:`densir.tokenization.tokenize_pairs`, the path re-ranking uses too.
    """

    def __init__(self, tokenizer, max_len: int, pad_to_multiple_of: int | None = None):
        self.tokenizer, self.max_len, self.pad_to_multiple_of = tokenizer, max_len, pad_to_multiple_of

    def __call__(self, items: list[dict]) -> dict:
        n = len(items[0]["passages"])
        if any(len(it["passages"]) != n for it in items):
            raise ValueError("every group of a batch must have the same number of passages")
        queries = [it["query"] for it in items for _ in it["passages"]]
        passages = [p for it in items for p in it["passages"]]
        relevance = torch.zeros(len(items), n)
        relevance[:, 0] = 1.0
        return {"pairs": tokenize_pairs(self.tokenizer, queries, passages, self.max_len, self.pad_to_multiple_of),
                "relevance": relevance}
