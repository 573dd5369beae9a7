"""Bi-encoder batches: :class:`TrainCollator` turns :class:`densir.dataset.TrainDataset` items into
``{"query": tensors, "passage": tensors}``."""
from __future__ import annotations

from densir.tokenization import tokenize_batch


class TrainCollator:
    """Batch of :class:`TrainDataset` items -> ``{"query": tensors, "passage": tensors}``.

    Tokenizes on the fly with :func:`tokenize_batch` (fast tokenizer, dynamic padding to the
    longest item; pre-tokenized ids accepted). Passages come group by group, positive first, the
    layout :class:`densir.retriever.loss.ContrastiveLoss` expects.
    """

    def __init__(self, tokenizer, q_max_len: int = 32, p_max_len: int = 128, query_prefix: str = "",
                 passage_prefix: str = "", pad_to_multiple_of: int | None = None):
        self.tokenizer, self.q_max_len, self.p_max_len = tokenizer, q_max_len, p_max_len
        self.query_prefix, self.passage_prefix = query_prefix or "", passage_prefix or ""
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict]) -> dict:
        queries = [it["query"] for it in items]
        passages = [p for it in items for p in it["passages"]]
        return {
            "query": tokenize_batch(self.tokenizer, queries, self.q_max_len, self.query_prefix, self.pad_to_multiple_of),
            "passage": tokenize_batch(self.tokenizer, passages, self.p_max_len, self.passage_prefix,
                                      self.pad_to_multiple_of),
        }
