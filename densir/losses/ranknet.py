"""RankNet (Burges et al., 2005): the pairwise logistic loss, and the one pairwise mechanism
:class:`densir.losses.lambdaloss.LambdaLoss` weights."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("query", "pair")


class RankNetLoss(nn.Module):
    """RankNet (Burges, Shaked, Renshaw, Lazier, Deeds, Hamilton & Hullender, 2005, "Learning to
    Rank using Gradient Descent", ICML): logistic loss on every pair a query's labels order::

        L_q = - sum_{i,j: y_i > y_j}  log2 sigmoid( sigma * (s_i - s_j) )

    the cross entropy of the model's pair probability ``P_ij = sigmoid(sigma (s_i - s_j))``
    against the target ``P_ij = 1``, in bits: Burges's natural-log loss divided by ``ln 2``, as
    sentence-transformers' ``RankNetLoss`` (and LambdaLoss, of which this is the unweighted case).
    Pairs of equal labels (ties) add nothing.

    ``reduction``: ``query`` (default) sums each query's pairs and averages over queries (the
    paper's per-query loss, batch mean as every densir loss); ``pair`` averages over all pairs of
    the batch, as sentence-transformers does. ``k``: only pairs with at least one passage in the
    model's current top ``k`` count (LambdaLoss paper, eq. 18; sentence-transformers' ``k``).
    """

    def __init__(self, sigma: float = 1.0, reduction: str = "query", k: int | None = None):
        super().__init__()
        _check(reduction, k)
        self.sigma, self.reduction, self.k = sigma, reduction, k

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        s, y = rank_by_scores(scores.float(), relevance.float())
        return pairwise_logistic_loss(s, y, None, self.sigma, self.reduction, self.k)


def rank_by_scores(scores: torch.Tensor, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both ``[Q, n]`` tensors reordered so position ``k`` holds each query's k-th ranked passage
    by current score (the sort is not differentiated; tied scores keep their input order)."""
    order = scores.detach().argsort(dim=-1, descending=True, stable=True)
    return scores.gather(-1, order), relevance.gather(-1, order)


def pairwise_logistic_loss(s: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, sigma: float,
                           reduction: str, k: int | None) -> torch.Tensor:
    """``- sum_{y_i > y_j} w_ij log2 sigmoid(sigma (s_i - s_j))``, reduced per ``reduction``.

    ``s, y``: ``[Q, n]`` in rank order (:func:`rank_by_scores`); ``weights``: ``[Q, n, n]``
    constants, or None for 1.
    """
    n = s.size(-1)
    pairs = y[:, :, None] > y[:, None, :]  # i more relevant than j
    if k is not None and k < n:
        top = torch.arange(n, device=s.device) < k
        pairs = pairs & (top[:, None] | top[None, :])[None]
    # log2 sigmoid(x) = logsigmoid(x) / ln 2, stable for large |x|
    pair_loss = -F.logsigmoid(sigma * (s[:, :, None] - s[:, None, :])) / math.log(2.0)
    if weights is not None:
        pair_loss = weights * pair_loss
    pair_loss = torch.where(pairs, pair_loss, torch.zeros_like(pair_loss))
    if reduction == "query":
        return pair_loss.sum(dim=(1, 2)).mean()
    return pair_loss.sum() / pairs.sum().clamp(min=1)


def _check(reduction: str, k: int | None) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown pairwise reduction {reduction!r}; one of {REDUCTIONS}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
