"""ListMLE (Xia et al., 2008) and its position-aware form PListMLE (Lan et al., 2014)."""
from __future__ import annotations

import torch
from torch import nn


class ListMLELoss(nn.Module):
    """ListMLE (Xia, Liu, Wang, Zhang & Li, 2008, "Listwise Approach to Learning to Rank: Theory
    and Algorithm", ICML): the negative Plackett-Luce log-likelihood of the ranking the labels
    give::

        L_q = - sum_{i=1..n}  log( exp(s_pi(i)) / sum_{m=i..n} exp(s_pi(m)) )
        L   = 1/B  sum_q  L_q

    with ``pi`` the passages sorted by relevance, most relevant first. Ties in the labels are
    broken by input order (a stable sort); densir's train groups put the positive first and the
    negatives in a seeded random order (:class:`densir.dataset.TrainDataset`), so tied negatives
    come in a random, reproducible order, as allRank's random tie-break. This equals
    sentence-transformers' ``ListMLELoss`` on lists sorted this way (its ``respect_input_order``
    takes the input order as ``pi``).
    """

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        return -(plackett_luce_log_probs(scores, relevance)).sum(-1).mean()


class PListMLELoss(nn.Module):
    """Position-aware ListMLE (Lan, Zhu, Guo, Niu & Cheng, 2014, "Position-Aware ListMLE: A
    Sequential Learning Process for Ranking", UAI): ListMLE's terms weighted by position::

        L_q = - sum_{i=1..n}  w_i log( exp(s_pi(i)) / sum_{m=i..n} exp(s_pi(m)) ),
        w_i = (2^{n-i} - 1) / sum_{m=1..n} (2^{n-m} - 1)

    so getting the top of the ranking right counts most (the weight of the last, certain, term
    is 0). The weights are sentence-transformers' ``PListMLELambdaWeight`` default (normalised
    to sum 1 per list, as its ``PListMLELoss`` does); ``pi`` and its ties as :class:`ListMLELoss`.
    """

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        log_p = plackett_luce_log_probs(scores, relevance)
        return -(log_p * position_weights(log_p.size(-1), log_p.device)).sum(-1).mean()


def plackett_luce_log_probs(scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """``[Q, n]``: term ``i`` is ``log P(pi(i) first among pi(i..n))`` under Plackett-Luce on ``scores``."""
    order = relevance.float().argsort(dim=-1, descending=True, stable=True)
    s = scores.float().gather(-1, order)
    # log sum_{m >= i} exp(s_m): a reversed cumulative logsumexp
    return s - torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)


def position_weights(n: int, device=None) -> torch.Tensor:
    """``[n]``: ``(2^{n-i} - 1)``, i = 1..n, normalised to sum 1 (0 for a list of one).

    Computed as ``2^{1-i} - 2^{1-n}`` (the same ratios) so that long lists do not overflow.
    """
    i = torch.arange(1, n + 1, device=device, dtype=torch.float32)
    w = torch.exp2(1.0 - i) - 2.0 ** (1.0 - n)
    return w / w.sum().clamp(min=1e-10)
