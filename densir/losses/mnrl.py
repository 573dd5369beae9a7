"""Multiple-negatives ranking loss for the cross-encoder: each query's positive against its own hard
negatives and passages of the other queries in the batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densir.losses.checks import require_positive

ACTIVATIONS = ("sigmoid", "none")


class MultipleNegativesRankingLoss(nn.Module):
    """Cross entropy of each query's positive among its candidates (Henderson et al. 2017, "Efficient
    Natural Language Response Suggestion for Smart Reply", section 4.4; sentence-transformers'
    cross-encoder ``MultipleNegativesRankingLoss``)::

        L = -1/B  sum_q  log( exp(c * f(s_q0)) / sum_j exp(c * f(s_qj)) )

    ``s_q`` are the cross-encoder's logits for query q's candidates: its positive (column 0), its
    hard negatives, then ``num_negatives`` passages of *other* queries' groups in the batch (their
    positives and negatives), which :class:`densir.reranker.collator.RerankCollator` adds when built
    with ``in_batch_negatives=num_negatives``. ``f`` is ``activation`` (sigmoid, as
    sentence-transformers defaults, or none), ``c`` is ``scale``. A cross-encoder scores every
    (query, passage) pair separately, so the in-batch candidates cost forward passes; with
    ``--grad_cache`` the pairs go through :func:`densir.gradcache.cached_step` in chunks of
    ``--gc_pair_chunk_size``, the memory of one chunk, the gradients of the whole batch (what
    sentence-transformers' ``CachedMultipleNegativesRankingLoss`` does for it).

    ``forward(scores, relevance)``: ``[B, n + k]``; the target is column 0 whatever ``relevance``
    says (the collator gives 1 there and 0 elsewhere).
    """

    in_batch = True

    def __init__(self, num_negatives: int | None = 4, scale: float = 10.0, activation: str = "sigmoid"):
        super().__init__()
        if num_negatives is not None and num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0 or None (all), got {num_negatives}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        require_positive(scale=scale)
        self.num_negatives, self.scale, self.activation = num_negatives, scale, activation

    def forward(self, scores: torch.Tensor, relevance: torch.Tensor | None = None) -> torch.Tensor:
        scores = scores.float()
        if self.activation == "sigmoid":
            scores = torch.sigmoid(scores)
        target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        return F.cross_entropy(scores * self.scale, target)
