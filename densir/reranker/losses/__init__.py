"""The cross-encoder re-ranker's losses, one module each: binary CE (:mod:`.pointwise`), listwise
softmax CE (:mod:`.listwise`) and LambdaLoss (:mod:`.lambdaloss`).

Every loss takes ``scores`` and ``relevance``, both ``[queries, passages_per_query]``: the
re-ranker's logits for each query's group (:class:`densir.dataset.TrainDataset` lays a group out as
positive first, then negatives) and the graded relevance of each passage (1 for the positive,
0 for the negatives in densir's train groups). Scores are cast to float32 first: the losses are
computed in full precision whatever the autocast dtype of the model.

Each is a batch mean over queries (BCE: over pairs), so its scale does not depend on the batch
size and HF's Trainer (which divides by gradient-accumulation steps) needs no other scaling.
"""
from __future__ import annotations

from torch import nn

from densir.reranker.losses.lambdaloss import LambdaLoss
from densir.reranker.losses.listwise import ListwiseSoftmaxLoss
from densir.reranker.losses.pointwise import BinaryCrossEntropyLoss

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


def build_loss_from_args(args) -> nn.Module:
    """The loss a :class:`densir.reranker.arguments.RerankerTrainingArguments` names, with its settings."""
    if args.loss == "listwise":
        return build_loss("listwise", temperature=args.temperature)
    if args.loss == "lambda":
        return build_loss("lambda", weighting=args.lambda_weighting, sigma=args.lambda_sigma, mu=args.lambda_mu)
    return build_loss("bce", pos_weight=args.bce_pos_weight)


__all__ = ["LOSSES", "BinaryCrossEntropyLoss", "LambdaLoss", "ListwiseSoftmaxLoss", "build_loss", "build_loss_from_args"]
