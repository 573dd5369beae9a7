"""The score-level losses of both trainers, one registry (:data:`LOSS_CLASSES`), one module each:

========== ======================================= =========================================
name       module                                   paper
========== ======================================= =========================================
bce        :mod:`.pointwise` BinaryCrossEntropyLoss monoBERT (Nogueira & Cho 2019)
listwise   :mod:`.listwise` ListwiseSoftmaxLoss     LCE (Gao, Dai & Callan 2021)
lambda     :mod:`.lambdaloss` LambdaLoss            Wang et al. 2018 (NDCG-Loss2++, -Loss2, LambdaRank)
ranknet    :mod:`.ranknet` RankNetLoss              Burges et al. 2005
listmle    :mod:`.listmle` ListMLELoss              Xia et al. 2008
plistmle   :mod:`.listmle` PListMLELoss             Lan et al. 2014 (position-aware)
margin_mse :mod:`.distillation` MarginMSELoss       Hofstaetter et al. 2020 (teacher scores)
kl         :mod:`.distillation` KLDistillationLoss  RocketQAv2 / Tevatron (teacher scores)
mnrl       :mod:`.mnrl` MultipleNegativesRankingLoss Henderson et al. 2017 (in-batch negatives)
========== ======================================= =========================================

Every loss is a plain ``nn.Module`` (its docstring gives the formula and the paper),
``forward(scores, target) -> scalar``, both ``[queries, passages_per_query]``: a model's scores
for each query's group (:class:`densir.dataset.TrainDataset` lays a group out as positive
first, then negatives) and, per passage, either its graded relevance (the train groups'
``"relevance"``, else 1 for the positive and 0 for the negatives) or, for a loss with
``needs_teacher = True`` (:data:`TEACHER_LOSSES`), the teacher's score (the passages'
``"score"``). The cross-encoder trains on any (``--loss``; :func:`loss_target` picks its target
from a :class:`densir.reranker.collator.RerankCollator` batch), the bi-encoder on a teacher loss
(``--distill_loss``, :class:`densir.retriever.loss.GroupScoreLoss`); ``rerank.sh`` asks for
:data:`LOSSES`. Scores are cast to float32 first, whatever the model's autocast dtype.

Each is a batch mean over queries (BCE: over pairs; Margin-MSE: over margins; ``lambda`` and
``ranknet`` with ``reduction='pair'``: over pairs), so its scale does not depend on the batch
size and HF's Trainer (which divides by gradient-accumulation steps) needs no other scaling.
"""
from __future__ import annotations

import torch
from torch import nn

from densir.losses.distillation import KLDistillationLoss, MarginMSELoss
from densir.losses.lambdaloss import LambdaLoss
from densir.losses.listmle import ListMLELoss, PListMLELoss
from densir.losses.listwise import ListwiseSoftmaxLoss
from densir.losses.mnrl import MultipleNegativesRankingLoss
from densir.losses.pointwise import BinaryCrossEntropyLoss
from densir.losses.ranknet import RankNetLoss

LOSS_CLASSES = {
    "bce": BinaryCrossEntropyLoss,
    "listwise": ListwiseSoftmaxLoss,
    "lambda": LambdaLoss,
    "ranknet": RankNetLoss,
    "listmle": ListMLELoss,
    "plistmle": PListMLELoss,
    "margin_mse": MarginMSELoss,
    "kl": KLDistillationLoss,
    "mnrl": MultipleNegativesRankingLoss,
}
LOSSES = tuple(LOSS_CLASSES)
TEACHER_LOSSES = tuple(name for name, cls in LOSS_CLASSES.items() if getattr(cls, "needs_teacher", False))


def build_loss(name: str, **kwargs) -> nn.Module:
    """A name of :data:`LOSSES` -> the loss module (kwargs go to its constructor)."""
    if name not in LOSS_CLASSES:
        raise ValueError(f"unknown loss {name!r}; one of {LOSSES}")
    return LOSS_CLASSES[name](**kwargs)


def build_loss_from_args(args) -> nn.Module:
    """The loss a :class:`densir.reranker.arguments.RerankerTrainingArguments` names, with its settings."""
    settings = {
        "bce": lambda: {"pos_weight": args.bce_pos_weight},
        "listwise": lambda: {"temperature": args.temperature},
        "lambda": lambda: {"weighting": args.lambda_weighting, "sigma": args.lambda_sigma, "mu": args.lambda_mu,
                           "reduction": args.pairwise_reduction, "k": args.lambda_k},
        "ranknet": lambda: {"sigma": args.ranknet_sigma, "reduction": args.pairwise_reduction, "k": args.lambda_k},
        "kl": lambda: {"temperature": args.kl_temperature},
        "mnrl": lambda: {"num_negatives": args.mnrl_num_negatives, "scale": args.mnrl_scale,
                         "activation": args.mnrl_activation},
    }
    return build_loss(args.loss, **settings.get(args.loss, dict)())


def needs_teacher(loss: nn.Module | str) -> bool:
    """Whether a loss (or a loss name) learns from teacher scores rather than relevance labels."""
    cls = LOSS_CLASSES[loss] if isinstance(loss, str) else loss
    return bool(getattr(cls, "needs_teacher", False))


def in_batch_negatives(loss: nn.Module) -> int | None:
    """How many in-batch candidates a loss wants the collator to add per query (0: none; None: all)."""
    return loss.num_negatives if getattr(loss, "in_batch", False) else 0


def loss_target(loss: nn.Module, batch: dict) -> torch.Tensor:
    """The ``[B, n]`` tensor ``loss`` takes from a RerankCollator batch: ``teacher`` or ``relevance``."""
    if needs_teacher(loss):
        if "teacher" not in batch:
            raise ValueError(f"{type(loss).__name__} distils from teacher scores: build the RerankCollator "
                             "with teacher=True")
        return batch["teacher"]
    return batch["relevance"]


__all__ = ["LOSSES", "LOSS_CLASSES", "TEACHER_LOSSES", "BinaryCrossEntropyLoss", "KLDistillationLoss", "LambdaLoss",
           "ListMLELoss", "ListwiseSoftmaxLoss", "MarginMSELoss", "MultipleNegativesRankingLoss", "PListMLELoss",
           "RankNetLoss", "build_loss", "build_loss_from_args", "in_batch_negatives", "loss_target", "needs_teacher"]
