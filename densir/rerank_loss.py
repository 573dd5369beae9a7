"""The cross-encoder re-ranker's losses: binary CE, listwise softmax CE and LambdaLoss.

Every loss takes ``scores`` and ``relevance``, both ``[queries, passages_per_query]``: the
re-ranker's logits for each query's group (:class:`densir.data.TrainDataset` lays a group out as
positive first, then negatives) and the graded relevance of each passage (1 for the positive,
0 for the negatives in densir's train groups). Scores are cast to float32 first: the losses are
computed in full precision whatever the autocast dtype of the model.

Each is a batch mean over queries (BCE: over pairs), so its scale does not depend on the batch
size and HF's Trainer (which divides by gradient-accumulation steps) needs no other scaling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("bce", "listwise", "lambda")


def build_loss(name: str, **kwargs) -> nn.Module:
    """``bce`` | ``listwise`` | ``lambda`` -> the loss module (kwargs go to its constructor)."""
    if name == "bce":
        return BinaryCrossEntropyLoss(**kwargs)
    if name == "listwise":
        return ListwiseSoftmaxLoss(**kwargs)
    if name == "lambda":
        return LambdaLoss(**kwargs)
    raise ValueError(f"unknown re-ranker loss {name!r}; one of {LOSSES}")


class BinaryCrossEntropyLoss(nn.Module):
    """Pointwise binary cross entropy over every (query, passage, label) pair::

        L = -1/N  sum_{(q,p)}  y log sigmoid(s) + (1 - y) log(1 - sigmoid(s)),   y = [rel > 0]

    as in monoBERT (Nogueira & Cho, 2019, "Passage Re-ranking with BERT") and
    sentence-transformers' ``BinaryCrossEntropyLoss``. ``pos_weight`` (default 1) weighs the
    positives, e.g. ``n - 1`` to balance one positive against ``n - 1`` negatives.
    """

    def __init__(self, pos_weight: float | None = None):
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        target = (relevance > 0).float()
        pos_weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=scores.device)
        return F.binary_cross_entropy_with_logits(scores, target, pos_weight=pos_weight)


class ListwiseSoftmaxLoss(nn.Module):
    """Softmax cross entropy over each query's own group [1 positive + n negatives]::

        L = -1/B  sum_q  sum_i  t_qi log( exp(s_qi / tau) / sum_j exp(s_qj / tau) ),   t_qi = y_qi / sum_j y_qj

    With one positive this is ``-log softmax(s_q)[positive]``: the localized contrastive
    estimation of Gao, Dai & Callan (2021, "Rethink Training of BERT Rerankers in Multi-Stage
    Retrieval Pipeline", LCE), i.e. the bi-encoder's contrastive loss (:mod:`densir.loss`)
    restricted to the query's own group, with the cross-encoder's logits as scores. (That loss
    takes embeddings, not scores, and adds in-batch negatives, which a cross-encoder cannot
    score for free; what the two share is ``F.cross_entropy``.)
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        target = relevance.float().clamp(min=0)
        total = target.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("listwise loss: a group without any relevant passage")
        return F.cross_entropy(scores, target / total)


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
