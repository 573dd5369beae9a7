"""LambdaLoss (Wang et al., 2018): NDCG-weighted pairwise logistic loss."""
from __future__ import annotations

import torch
from torch import nn

from densir.losses.ranknet import _check, pairwise_logistic_loss, rank_by_scores


class LambdaLoss(nn.Module):
    """LambdaLoss (Wang, Li, Golbandi, Bendersky & Najork, 2018, "The LambdaLoss Framework for
    Ranking Metric Optimization", CIKM): NDCG-weighted pairwise logistic loss::

        L_q = - sum_{i,j: y_i > y_j}  w_ij * log2( sigmoid( sigma * (s_i - s_j) ) )
        L   = 1/B  sum_q  L_q

    with ``i, j`` also naming the ranks of the two passages when the group is sorted by the
    current scores (the sort is not differentiated; tied scores keep their input order), gains
    ``G_i = (2^{y_i} - 1) / maxDCG`` (graded labels welcome), discounts ``D_i = log2(1 + rank_i)``
    and the weighting scheme:

    - ``ndcg2``:     ``w_ij = delta_ij * |G_i - G_j|``, with ``delta_ij = |1/D(|i-j|) - 1/D(|i-j|+1)|``
      (NDCG-Loss2, the paper's bound on NDCG, eq. 13)
    - ``ndcg2pp``:   ``w_ij = (|1/D_i - 1/D_j| + mu * delta_ij) * |G_i - G_j|``
      (NDCG-Loss2++, the paper's best: LambdaRank's weight plus mu times NDCG-Loss2's; the
      default, mu = 10 as in allRank and sentence-transformers)
    - ``lambdarank``: ``w_ij = |G_i - G_j| * |1/D_i - 1/D_j|`` (= |delta NDCG| of swapping i and j)

    The weights are constants (detached), so the gradient pushes each relevant passage above
    every less relevant one, hardest where swapping them changes NDCG the most. ``sigma`` is the
    logistic scale of the score differences. Pairs of equal labels add nothing.

    ``reduction``: ``query`` (default) is the paper's per-query sum, averaged over queries;
    ``pair`` averages over all the batch's pairs (``y_i > y_j``), as sentence-transformers'
    ``LambdaLoss`` does (the same value when every query has as many pairs; with graded labels
    the two differ by a batch-dependent factor). ``k``: NDCG@k, i.e. maxDCG over the ideal top
    ``k`` and only pairs with a passage in the current top ``k`` (the paper's eq. 18, and
    sentence-transformers' ``k``). The pairwise mechanism is RankNet's
    (:func:`densir.losses.ranknet.pairwise_logistic_loss`).
    """

    SCHEMES = ("ndcg2pp", "ndcg2", "lambdarank")

    def __init__(self, weighting: str = "ndcg2pp", sigma: float = 1.0, mu: float = 10.0, reduction: str = "query",
                 k: int | None = None):
        super().__init__()
        if weighting not in self.SCHEMES:
            raise ValueError(f"unknown LambdaLoss weighting {weighting!r}; one of {self.SCHEMES}")
        _check(reduction, k)
        self.weighting, self.sigma, self.mu, self.reduction, self.k = weighting, sigma, mu, reduction, k

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        s, y = rank_by_scores(scores.float(), relevance.float())
        with torch.no_grad():
            weights = self.weights(y)
        return pairwise_logistic_loss(s, y, weights, self.sigma, self.reduction, self.k)

    def weights(self, y: torch.Tensor) -> torch.Tensor:
        """``[Q, n, n]`` pair weights ``w_ij`` for labels ``y`` in rank order."""
        y = y.clamp(min=0)  # gains of negative labels are 0, as in allRank and sentence-transformers
        n = y.size(-1)
        k = n if self.k is None else min(self.k, n)
        ranks = torch.arange(1, n + 1, device=y.device, dtype=torch.float32)
        inv_d = 1.0 / torch.log2(1.0 + ranks)  # 1/D at rank 1..n
        ideal = (y.sort(-1, descending=True).values.exp2() - 1.0) * inv_d
        max_dcg = ideal[:, :k].sum(-1, keepdim=True).clamp(min=1e-10)
        gain = (y.exp2() - 1.0) / max_dcg
        gain_diff = (gain[:, :, None] - gain[:, None, :]).abs()
        # delta_ij = |1/D(|i-j|) - 1/D(|i-j|+1)|, zero on the diagonal
        dist = (ranks[:, None] - ranks[None, :]).abs()
        delta = (1.0 / torch.log2(1.0 + dist).clamp(min=1e-10) - 1.0 / torch.log2(2.0 + dist)).abs()
        delta.fill_diagonal_(0.0)
        rho = (inv_d[:, None] - inv_d[None, :]).abs()
        if self.weighting == "ndcg2":
            return delta[None] * gain_diff
        if self.weighting == "ndcg2pp":
            return (rho + self.mu * delta)[None] * gain_diff
        return rho[None] * gain_diff
