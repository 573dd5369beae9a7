"""Distillation from a teacher's scores: MarginMSE (Hofstaetter et al., 2020) and listwise KL
(RocketQAv2, Tevatron's distillation).

Both take the teacher's scores where the other losses take relevance labels, ``forward(scores,
teacher)``, both ``[queries, passages_per_query]`` with the positive in column 0; they say so
with ``needs_teacher = True``, and :func:`densir.losses.loss_target` hands them the
batch's ``teacher`` tensor (the passages' ``"score"`` in the train groups, written by
``tools/score_groups.py``) instead of its ``relevance``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densir.losses.checks import require_positive


class MarginMSELoss(nn.Module):
    """Margin-MSE (Hofstaetter, Althammer, Schroeder, Sertkan & Hanbury, 2020, "Improving
    Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation"): the
    student's margins between the positive and each negative regress the teacher's::

        L = 1/(B (n-1))  sum_q sum_{j=1..n-1}  ( (s_q0 - s_qj) - (t_q0 - t_qj) )^2

    ``t`` the teacher's scores (raw logits, the same scale as the student's; only differences
    matter, so any per-query offset of the teacher cancels). With ``n = 2`` this is the paper's
    (query, positive, negative) triple; with more negatives, the mean over them, as
    sentence-transformers' ``MarginMSELoss`` given one label per passage.
    """

    needs_teacher = True

    def forward(self, scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        scores, teacher = scores.float(), teacher.float()
        if scores.size(-1) < 2:
            raise ValueError("margin MSE needs a positive and at least one negative per query")
        student_margin = scores[:, :1] - scores[:, 1:]
        teacher_margin = teacher[:, :1] - teacher[:, 1:]
        return F.mse_loss(student_margin, teacher_margin.detach())


class KLDistillationLoss(nn.Module):
    """Listwise distillation: the KL divergence from the teacher's softmax over each query's
    group to the student's::

        L = 1/B  sum_q  KL( softmax(t_q / T_t) || softmax(s_q / T) )
          = 1/B  sum_q  sum_i  p_qi ( log p_qi - log softmax(s_q / T)_i ),   p_q = softmax(t_q / T_t)

    as RocketQAv2's dynamic listwise distillation (Ren et al., 2021, "RocketQAv2: A Joint
    Training Method for Dense Passage Retrieval and Passage Re-ranking") and Tevatron's
    ``DistilTevatronTrainer`` (``kl_div(log_softmax(student / T), softmax(teacher / T),
    reduction='batchmean')``, its ``--distil_temperature``). ``T`` (``temperature``, default 1)
    softens the student's distribution, ``T_t`` (``teacher_temperature``, default ``T``) the
    teacher's; as in Tevatron there is no ``T^2`` factor, so the gradient's scale shrinks as
    ``T`` grows.
    """

    needs_teacher = True

    def __init__(self, temperature: float = 1.0, teacher_temperature: float | None = None):
        super().__init__()
        teacher_temperature = temperature if teacher_temperature is None else teacher_temperature
        require_positive(temperature=temperature, teacher_temperature=teacher_temperature)
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def forward(self, scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = F.log_softmax(scores.float() / self.temperature, dim=-1)
        target = F.log_softmax(teacher.float().detach() / self.teacher_temperature, dim=-1)
        return F.kl_div(student, target, log_target=True, reduction="batchmean")
