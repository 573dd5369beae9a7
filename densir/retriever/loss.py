"""The one contrastive loss of densir, used by every training path (in-batch, hard negatives,
cross-device, grad cache).

For a batch of queries ``q_1..q_B`` and passages ``p_1..p_{B*n}`` laid out group by group
(query ``i`` owns passages ``i*n .. i*n+n-1``, its positive first)::

    s_ij = q_i . p_j / temperature
    L    = -1/B  sum_i  log( exp(s_{i, i*n}) / sum_j exp(s_ij) )

i.e. cross entropy over every passage in the batch: the query's own hard negatives and every
other query's passages (in-batch negatives), as in DPR (Karpukhin et al., 2020, "Dense Passage
Retrieval for Open-Domain Question Answering") and Tevatron (Gao et al., 2022).

With ``negatives_x_device`` under ``torch.distributed``, the passages of every rank join the
candidate set (``B*n*world_size`` candidates per query). See :func:`gather_with_grad` for how the
gradient of the full global batch comes out of DDP: that is the only place where densir scales
anything for distribution.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class ContrastiveLoss(nn.Module):
    """InfoNCE over all passages of the (local or global) batch; see the module docstring."""

    def __init__(self, temperature: float = 1.0, negatives_x_device: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.negatives_x_device = negatives_x_device

    def forward(self, q_reps: torch.Tensor, p_reps: torch.Tensor) -> torch.Tensor:
        if q_reps.size(0) == 0 or p_reps.size(0) % q_reps.size(0):
            raise ValueError(f"{p_reps.size(0)} passages for {q_reps.size(0)} queries: expected a whole group per query")
        n_passages = p_reps.size(0) // q_reps.size(0)
        offset = 0
        if self.negatives_x_device and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            p_reps, offset = gather_with_grad(p_reps)
        # fp32 scores whatever the encoder's autocast dtype: the softmax over thousands of
        # candidates at temperature 0.01-0.05 is where bf16 would lose precision
        scores = q_reps.float() @ p_reps.float().T / self.temperature
        target = offset + torch.arange(q_reps.size(0), device=scores.device) * n_passages
        return F.cross_entropy(scores, target)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int):
        ctx.sizes, ctx.rank = sizes, rank
        width = max(sizes)
        padded = x.new_zeros((width, *x.shape[1:]))
        padded[: x.size(0)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # SUM over ranks; see gather_with_grad
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' ``x`` concatenated in rank order, and where this rank's slice starts.

    Why no explicit ``* world_size`` anywhere: each rank's loss ``L_r`` is the mean over its own
    queries against the global passages, and DDP averages parameter gradients, so the model is
    trained on ``L = mean_r L_r``, the loss of the global batch. The gradient of ``L`` wrt this
    rank's passages is ``1/W * sum_r dL_r/dp``; the backward of this gather all-reduces (sums)
    ``dL_r/dp`` from every rank and hands back this rank's slice, i.e. ``W * dL/dp`` (and the
    local queries get ``dL_r/dq = W * dL/dq``); DDP's division by ``W`` then leaves exactly
    ``dL/dtheta``. Gloo and NCCL both support the all_gather/all_reduce pair used here.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([x.size(0)], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    return _GatherWithGrad.apply(x, sizes, rank), sum(sizes[:rank])
