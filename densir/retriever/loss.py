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

Distillation from teacher scores (a cross-encoder's, or any scored run's) carried by the train
groups: the score-level losses of :mod:`densir.losses` (the cross-encoder's own MarginMSE and
KL), on each query's own group through :class:`GroupScoreLoss`. :class:`CombinedLoss` weighs
them against the contrastive loss; :func:`build_loss` builds the objective from
:class:`densir.retriever.arguments.DenseTrainingArguments`.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from densir.io import ParameterError
from densir.losses import TEACHER_LOSSES
from densir.losses import build_loss as build_score_loss
from densir.losses.checks import require_positive


class ContrastiveLoss(nn.Module):
    """InfoNCE over all passages of the (local or global) batch; see the module docstring."""

    def __init__(self, temperature: float = 1.0, negatives_x_device: bool = False):
        super().__init__()
        require_positive(temperature=temperature)
        self.temperature = temperature
        self.negatives_x_device = negatives_x_device

    def forward(self, q_reps: torch.Tensor, p_reps: torch.Tensor) -> torch.Tensor:
        n_passages = group_size(q_reps, p_reps)
        offset = 0
        if self.negatives_x_device and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            p_reps, offset = gather_with_grad(p_reps)
        # fp32 scores whatever the encoder's autocast dtype: the softmax over thousands of
        # candidates at temperature 0.01-0.05 is where bf16 would lose precision
        scores = q_reps.float() @ p_reps.float().T / self.temperature
        target = offset + torch.arange(q_reps.size(0), device=scores.device) * n_passages
        return F.cross_entropy(scores, target)


def group_size(q_reps: torch.Tensor, p_reps: torch.Tensor) -> int:
    """Passages per query (``n``) of a batch laid out group by group."""
    if q_reps.size(0) == 0 or p_reps.size(0) % q_reps.size(0):
        raise ValueError(f"{p_reps.size(0)} passages for {q_reps.size(0)} queries: expected a whole group per query")
    return p_reps.size(0) // q_reps.size(0)


# --------------------------------------------------------------------------- distillation
def group_scores(q_reps: torch.Tensor, p_reps: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[B, n]`` student scores ``s_ij = q_i . p_{i*n+j} / temperature`` of each query's own group (fp32)."""
    groups = p_reps.float().view(q_reps.size(0), group_size(q_reps, p_reps), p_reps.size(-1))
    return torch.einsum("bd,bnd->bn", q_reps.float(), groups) / temperature


class GroupScoreLoss(nn.Module):
    """A score-level loss of :mod:`densir.losses` (one that ``needs_teacher``: MarginMSE, KL) on the
    bi-encoder's scores of each query's own group, ``s_ij = q_i . p_ij / temperature``, against the
    teacher's scores ``t_ij`` that the train groups carry::

        L = loss(s, t)        # e.g. MarginMSE: 1/(B (n-1)) sum_i sum_j ((s_i0 - s_ij) - (t_i0 - t_ij))^2

    ``temperature`` (densir's ``--temperature``) puts a cosine student on the teacher's logit
    scale (1 = raw dot products, the MarginMSE paper's setting). The formula and the paper of each
    loss are in its own docstring (:class:`densir.losses.MarginMSELoss`,
    :class:`densir.losses.KLDistillationLoss`, whose ``teacher_temperature`` is ``--teacher_temperature``).
    """

    needs_teacher = True

    def __init__(self, loss: nn.Module, temperature: float = 1.0):
        super().__init__()
        require_positive(temperature=temperature)
        self.loss, self.temperature = loss, temperature

    def forward(self, q_reps: torch.Tensor, p_reps: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
        student = group_scores(q_reps, p_reps, self.temperature)
        if teacher_scores is None:
            raise ValueError("a distillation loss needs teacher scores (train groups with per-passage scores)")
        teacher = torch.as_tensor(teacher_scores, device=student.device).float()
        if teacher.shape != student.shape:
            raise ValueError(f"teacher scores of shape {tuple(teacher.shape)} for groups of shape "
                             f"{tuple(student.shape)} (queries x passages per query)")
        return self.loss(student, teacher)


class CombinedLoss(nn.Module):
    """The bi-encoder objective with distillation::

        L = contrastive_weight * ContrastiveLoss(q, p) + distill_weight * distill(q, p, teacher_scores)

    This is the one place where densir weighs losses: each term is a plain mean over this rank's
    queries (see :func:`gather_with_grad` for why none is rescaled for DDP), so the weights are
    the whole story. ``contrastive_weight = 0`` trains on the distillation loss alone (the
    contrastive term is then not computed at all).
    """

    def __init__(self, contrastive: ContrastiveLoss | None, distill: nn.Module | None,
                 contrastive_weight: float = 1.0, distill_weight: float = 1.0):
        super().__init__()
        if contrastive_weight < 0 or distill_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {contrastive_weight} and {distill_weight}")
        self.contrastive = contrastive if contrastive_weight > 0 else None
        self.distill = distill if distill_weight > 0 else None
        if self.contrastive is None and self.distill is None:
            raise ValueError("nothing to train on: the contrastive and the distillation weights are both 0 (or absent)")
        self.contrastive_weight, self.distill_weight = contrastive_weight, distill_weight

    @property
    def needs_teacher(self) -> bool:
        return self.distill is not None

    def forward(self, q_reps: torch.Tensor, p_reps: torch.Tensor,
                teacher_scores: torch.Tensor | None = None) -> torch.Tensor:
        loss = q_reps.new_zeros((), dtype=torch.float32)
        if self.contrastive is not None:
            loss = loss + self.contrastive_weight * self.contrastive(q_reps, p_reps)
        if self.distill is not None:
            loss = loss + self.distill_weight * self.distill(q_reps, p_reps, teacher_scores)
        return loss


def build_loss(args) -> nn.Module:
    """The training objective that :class:`~densir.retriever.arguments.DenseTrainingArguments` names:
    :class:`ContrastiveLoss` alone (the default), or :class:`CombinedLoss` with a ``distill_loss``
    of :data:`densir.losses.TEACHER_LOSSES` on the groups' scores (:class:`GroupScoreLoss`)."""
    contrastive = ContrastiveLoss(args.temperature, args.negatives_x_device)
    name = getattr(args, "distill_loss", None)
    if not name:
        if getattr(args, "contrastive_weight", 1.0) != 1.0:
            return CombinedLoss(contrastive, None, args.contrastive_weight, 0.0)
        return contrastive
    if name not in TEACHER_LOSSES:
        raise ParameterError(f"`distill_loss` must be one of {', '.join(TEACHER_LOSSES)}, got {name!r}")
    settings = {"kl": {"temperature": 1.0, "teacher_temperature": args.teacher_temperature}}
    distill = GroupScoreLoss(build_score_loss(name, **settings.get(name, {})), args.temperature)
    return CombinedLoss(contrastive, distill, args.contrastive_weight, args.distill_weight)


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
    if len(set(sizes)) > 1:
        # mean_r L_r is the global batch's loss only when every rank has as many queries;
        # accelerate's even_batches (on by default) guarantees it, so this is a broken setup
        raise RuntimeError(f"unequal local batches across ranks ({sizes} passages): the mean of the ranks' "
                           "losses would not be the loss of the global batch; keep accelerate's even_batches on")
    return _GatherWithGrad.apply(x, sizes, rank), sum(sizes[:rank])
