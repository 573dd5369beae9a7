"""Listwise re-ranking loss: softmax cross entropy over each query's group."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densir.losses.checks import require_positive


class ListwiseSoftmaxLoss(nn.Module):
    """Softmax cross entropy over each query's own group [1 positive + n negatives]::

        L = -1/B  sum_q  sum_i  t_qi log( exp(s_qi / tau) / sum_j exp(s_qj / tau) ),   t_qi = y_qi / sum_j y_qj

    With one positive this is ``-log softmax(s_q)[positive]``: the localized contrastive
    estimation of Gao, Dai & Callan (2021, "Rethink Training of BERT Rerankers in Multi-Stage
    Retrieval Pipeline", LCE), i.e. the bi-encoder's contrastive loss (:mod:`densir.retriever.loss`)
    restricted to the query's own group, with the cross-encoder's logits as scores. (That loss
    takes embeddings, not scores, and adds in-batch negatives, which a cross-encoder cannot
    score for free; what the two share is ``F.cross_entropy``.)
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        require_positive(temperature=temperature)
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        target = relevance.float().clamp(min=0)
        total = target.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("listwise loss: a group without any relevant passage")
        return F.cross_entropy(scores, target / total)
