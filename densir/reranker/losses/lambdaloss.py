"""LambdaLoss (Wang et al., 2018): NDCG-weighted pairwise logistic loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LambdaLoss(nn.Module):
    """LambdaLoss (Wang, Li, Golbandi, Bendersky & Najork, 2018, "The LambdaLoss Framework for
    Ranking Metric Optimization", CIKM): NDCG-weighted pairwise logistic loss::

        L_q = - sum_{i,j: y_i > y_j}  w_ij * log2( sigmoid( sigma * (s_i - s_j) ) )
        L   = 1/B  sum_q  L_q

    with ``i, j`` also naming the ranks of the two passages when the group is sorted by the
    current scores (the sort is not differentiated), gains ``G_i = (2^{y_i} - 1) / maxDCG``,
    discounts ``D_i = log2(1 + rank_i)`` and the weighting scheme:

    - ``ndcg2``:     ``w_ij = delta_ij * |G_i - G_j|``, with ``delta_ij = |1/D(|i-j|) - 1/D(|i-j|+1)|``
      (NDCG-Loss2, the paper's bound on NDCG, eq. 13)
    - ``ndcg2pp``:   ``w_ij = (|1/D_i - 1/D_j| + mu * delta_ij) * |G_i - G_j|``
      (NDCG-Loss2++, the paper's best: LambdaRank's weight plus mu times NDCG-Loss2's; the
      default, mu = 10 as in allRank and sentence-transformers)
    - ``lambdarank``: ``w_ij = |G_i - G_j| * |1/D_i - 1/D_j|`` (= |delta NDCG| of swapping i and j)

    The weights are constants (detached), so the gradient pushes each relevant passage above
    every less relevant one, hardest where swapping them changes NDCG the most. ``sigma`` is the
    logistic scale of the score differences.
    """

    SCHEMES = ("ndcg2pp", "ndcg2", "lambdarank")

    def __init__(self, weighting: str = "ndcg2pp", sigma: float = 1.0, mu: float = 10.0):
        super().__init__()
        if weighting not in self.SCHEMES:
            raise ValueError(f"unknown LambdaLoss weighting {weighting!r}; one of {self.SCHEMES}")
        self.weighting, self.sigma, self.mu = weighting, sigma, mu

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        scores, relevance = scores.float(), relevance.float()
        n = scores.size(-1)
        # sort each group by the current scores: position k holds the k-th ranked passage
        order = scores.detach().argsort(dim=-1, descending=True)
        s = scores.gather(-1, order)
        y = relevance.gather(-1, order)
        with torch.no_grad():
            ranks = torch.arange(1, n + 1, device=s.device, dtype=torch.float32)
            inv_d = 1.0 / torch.log2(1.0 + ranks)  # 1/D at rank 1..n
            ideal = (y.sort(-1, descending=True).values.exp2() - 1.0) * inv_d
            max_dcg = ideal.sum(-1, keepdim=True).clamp(min=1e-10)
            gain = (y.exp2() - 1.0) / max_dcg
            gain_diff = (gain[:, :, None] - gain[:, None, :]).abs()
            # delta_ij = |1/D(|i-j|) - 1/D(|i-j|+1)|, zero on the diagonal
            dist = (ranks[:, None] - ranks[None, :]).abs()
            delta = (1.0 / torch.log2(1.0 + dist).clamp(min=1e-10) - 1.0 / torch.log2(2.0 + dist)).abs()
            delta.fill_diagonal_(0.0)
            rho = (inv_d[:, None] - inv_d[None, :]).abs()
            if self.weighting == "ndcg2":
                weights = delta[None] * gain_diff
            elif self.weighting == "ndcg2pp":
                weights = (rho + self.mu * delta)[None] * gain_diff
            else:
                weights = rho[None] * gain_diff
            pairs = (y[:, :, None] > y[:, None, :]).float()  # i more relevant than j
        diff = s[:, :, None] - s[:, None, :]
        # log2 sigmoid(x) = logsigmoid(x) / ln 2, stable for large |x|
        pair_loss = -F.logsigmoid(self.sigma * diff) / torch.log(torch.tensor(2.0))
        return (pairs * weights * pair_loss).sum(dim=(1, 2)).mean()
