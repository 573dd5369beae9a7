"""Training the cross-encoder re-ranker: :class:`RerankerTrainer` and :class:`RerankCollator`.

Everything but the objective is the bi-encoder's: :class:`densir.trainer.DensirTrainer` (saving
through ``model.save``, resume, the ``(seed, epoch)`` sampler) and :class:`densir.data.TrainDataset`
(one positive + ``n-1`` negatives per query, a pure function of ``(seed, epoch, index)``). Here a
batch of ``B`` groups becomes ``B * n`` (query, passage) pairs scored jointly by the
cross-encoder, and the ``[B, n]`` logits go to one of :mod:`densir.rerank_loss`.
"""
from __future__ import annotations

import torch
from torch import nn

from densir.modeling.reranker import tokenize_pairs
from densir.trainer import DensirTrainer


class RerankCollator:
    """TrainDataset items -> ``{"pairs": tensors [B*n, L], "relevance": [B, n]}``.

    Pairs come group by group, positive first (relevance 1, negatives 0), tokenized by
    :func:`densir.modeling.reranker.tokenize_pairs`, the path re-ranking uses too.
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


class RerankerTrainer(DensirTrainer):
    """A :class:`DensirTrainer` whose loss is a re-ranking loss over each query's group of logits."""

    def __init__(self, *args, loss_fn: nn.Module, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        relevance = inputs["relevance"]
        scores = model(inputs["pairs"]).view(relevance.shape)
        loss = self.loss_fn(scores, relevance)
        return (loss, scores) if return_outputs else loss
