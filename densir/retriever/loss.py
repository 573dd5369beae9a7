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
groups: :class:`MarginMSELoss` and :class:`ListwiseKLLoss`, both over each query's own group.
:class:`CombinedLoss` weighs them against the contrastive loss; :func:`build_loss` builds the
objective from :class:`densir.retriever.arguments.DenseTrainingArguments`.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from densir.reranker.losses.distillation import KLDistillationLoss as _ScoreKL
from densir.reranker.losses.distillation import MarginMSELoss as _ScoreMarginMSE


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



# --------------------------------------------------------------------------- distillation
def group_scores(q_reps: torch.Tensor, p_reps: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[B, n]`` student scores ``s_ij = q_i . p_{i*n+j} / temperature`` of each query's own group (fp32)."""
    if q_reps.size(0) == 0 or p_reps.size(0) % q_reps.size(0):
        raise ValueError(f"{p_reps.size(0)} passages for {q_reps.size(0)} queries: expected a whole group per query")
    groups = p_reps.float().view(q_reps.size(0), -1, p_reps.size(-1))
    return torch.einsum("bd,bnd->bn", q_reps.float(), groups) / temperature


def _check_teacher(teacher_scores: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    if teacher_scores is None:
        raise ValueError("a distillation loss needs teacher scores (train groups with per-passage scores)")
    teacher_scores = torch.as_tensor(teacher_scores, device=student.device).float()
    if teacher_scores.shape != student.shape:
        raise ValueError(f"teacher scores of shape {tuple(teacher_scores.shape)} for groups of shape "
                         f"{tuple(student.shape)} (queries x passages per query)")
    return teacher_scores


class MarginMSELoss(nn.Module):
    """MarginMSE (Hofstaetter et al., 2020, "Improving Efficient Neural Ranking Models with
    Cross-Architecture Knowledge Distillation"): the student's margin between the positive and
    each negative regresses onto the teacher's.

    For query ``i`` with group scores ``s_i0 .. s_i,n-1`` (positive first; ``s_ij = q_i . p_ij /
    temperature``) and teacher scores ``t_ij``::

        L = 1/(B (n-1))  sum_i sum_{j=1..n-1}  ((s_i0 - s_ij) - (t_i0 - t_ij))^2

    With one negative per query it is the paper's triple loss. ``temperature`` (densir's
    ``--temperature``) puts a cosine student on the teacher's logit scale (1 = raw dot products,
    the paper's setting). Needs ``n >= 2``.
    """

    needs_teacher_scores = True

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, q_reps: torch.Tensor, p_reps: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
        student = group_scores(q_reps, p_reps, self.temperature)
        # the score-level loss is the cross-encoder's: one implementation of the formula
        return _ScoreMarginMSE()(student, _check_teacher(teacher_scores, student))


class ListwiseKLLoss(nn.Module):
    """Listwise distillation (RocketQAv2, Ren et al., 2021, "RocketQAv2: A Joint Training Method
    for Dense Passage Retrieval and Passage Re-ranking"; Tevatron's distillation trainer): the
    student's distribution over each query's own group matches the teacher's::

        L = 1/B  sum_i  KL( softmax(t_i / T_t) || softmax(s_i) ),   s_ij = q_i . p_ij / T

    ``T`` is the student's ``temperature`` (``--temperature``), ``T_t`` the teacher's
    (``--teacher_temperature``).
    """

    needs_teacher_scores = True

    def __init__(self, temperature: float = 1.0, teacher_temperature: float = 1.0):
        super().__init__()
        if temperature <= 0 or teacher_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got {temperature} and {teacher_temperature}")
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def forward(self, q_reps: torch.Tensor, p_reps: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
        student = group_scores(q_reps, p_reps, self.temperature)
        teacher = _check_teacher(teacher_scores, student) / self.teacher_temperature
        return _ScoreKL(temperature=1.0)(student, teacher)  # the cross-encoder's KL, both scales applied


DISTILL_LOSSES = {"margin_mse": MarginMSELoss, "kl": ListwiseKLLoss}


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
    def needs_teacher_scores(self) -> bool:
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
    :class:`ContrastiveLoss` alone (the default), or :class:`CombinedLoss` with ``--distill_loss``."""
    contrastive = ContrastiveLoss(args.temperature, args.negatives_x_device)
    distill_name = getattr(args, "distill_loss", None)
    if not distill_name:
        if getattr(args, "contrastive_weight", 1.0) != 1.0:
            return CombinedLoss(contrastive, None, args.contrastive_weight, 0.0)
        return contrastive
    if distill_name not in DISTILL_LOSSES:
        raise ValueError(f"--distill_loss must be one of {', '.join(DISTILL_LOSSES)}, got {distill_name!r}")
    distill = (MarginMSELoss(args.temperature) if distill_name == "margin_mse"
               else ListwiseKLLoss(args.temperature, args.teacher_temperature))
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
