"""Pointwise re-ranking loss: binary cross entropy over (query, passage, label) pairs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BinaryCrossEntropyLoss(nn.Module):
    """Pointwise binary cross entropy over every (query, passage, label) pair::

        L = -1/N  sum_{(q,p)}  y log sigmoid(s) + (1 - y) log(1 - sigmoid(s)),   y = [rel > 0]

    as in monoBERT (Nogueira & Cho, 2019, "Passage Re-ranking with BERT") and
    sentence-transformers' ``BinaryCrossEntropyLoss``. ``pos_weight`` (default 1) weighs the
    positives, e.g. ``n - 1`` to balance one positive against ``n - 1`` negatives.

    Graded labels are binarised: every passage with relevance > 0 is a positive here, a graded
    negative too (e.g. TREC DL's grade 1 "related" under ``grade_groups(relevant_min=2)``); the
    listwise and pairwise losses use the grades themselves.
    """

    def __init__(self, pos_weight: float | None = None):
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        target = (relevance > 0).float()
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=scores.device)
        return F.binary_cross_entropy_with_logits(scores, target, pos_weight=pos_weight)
