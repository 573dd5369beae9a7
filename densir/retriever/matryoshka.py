"""Matryoshka representation learning (Kusupati et al., 2022): one model whose first ``d``
dimensions are an embedding of their own, for each trained size ``d``.

    --matryoshka_dims 384,256,128,64 [--matryoshka_weights 1,1,1,1]

:class:`MatryoshkaLoss` wraps the bi-encoder's objective (:func:`densir.retriever.loss.build_loss`:
contrastive, distillation or both) as sentence-transformers' ``MatryoshkaLoss`` wraps its losses::

    L = sum_k  w_k * objective(q[:, :d_k], p[:, :d_k])

each truncation re-normalized when the encoder normalizes (so the truncated vectors are what
``encode --embedding_dim d`` writes). The sizes are recorded in the saved model's
densir_config.json (``matryoshka_dims``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def parse_dims(dims: str | None, weights: str | None = None, hidden_size: int | None = None
               ) -> tuple[list[int], list[float]] | None:
    """``"384,256"`` (and ``"1,0.5"``) -> ``([384, 256], [1.0, 0.5])``; None without dims. Sizes must be
    positive, distinct and at most ``hidden_size``; weights (default 1 each) non-negative, one per size."""
    if not dims:
        if weights:
            raise ValueError("--matryoshka_weights needs --matryoshka_dims")
        return None
    try:
        sizes = [int(d) for d in str(dims).split(",") if d.strip()]
        ws = [float(w) for w in str(weights).split(",") if w.strip()] if weights else [1.0] * len(sizes)
    except ValueError:
        raise ValueError(f"--matryoshka_dims/--matryoshka_weights: comma-separated numbers, got {dims!r} / "
                         f"{weights!r}") from None
    if not sizes or any(d < 1 for d in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"--matryoshka_dims must be distinct positive sizes, got {dims!r}")
    if hidden_size is not None and max(sizes) > hidden_size:
        raise ValueError(f"--matryoshka_dims {dims}: the model's embeddings have {hidden_size} dimensions")
    if len(ws) != len(sizes) or any(w < 0 for w in ws):
        raise ValueError(f"--matryoshka_weights: {len(sizes)} non-negative weights needed, got {weights!r}")
    return sizes, ws


def truncate(reps: torch.Tensor, dim: int, normalize: bool) -> torch.Tensor:
    """The first ``dim`` dimensions, L2-normalized again when ``normalize``."""
    reps = reps[..., :dim]
    return F.normalize(reps, p=2, dim=-1) if normalize else reps


class MatryoshkaLoss(nn.Module):
    """``sum_k w_k * loss(truncate(q, d_k), truncate(p, d_k), **kwargs)``; see the module docstring."""

    def __init__(self, loss: nn.Module, dims: list[int], weights: list[float] | None = None, normalize: bool = False):
        super().__init__()
        self.loss, self.dims = loss, list(dims)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.dims)
        if len(self.weights) != len(self.dims):
            raise ValueError(f"{len(self.weights)} weights for {len(self.dims)} sizes")
        self.normalize = normalize

    @property
    def needs_teacher(self) -> bool:
        return bool(getattr(self.loss, "needs_teacher", False))

    def forward(self, q_reps: torch.Tensor, p_reps: torch.Tensor, **kwargs) -> torch.Tensor:
        total = q_reps.new_zeros((), dtype=torch.float32)
        for dim, weight in zip(self.dims, self.weights):
            if weight:
                total = total + weight * self.loss(truncate(q_reps, dim, self.normalize),
                                                   truncate(p_reps, dim, self.normalize), **kwargs)
        return total


def with_matryoshka(loss: nn.Module, args, normalize: bool, hidden_size: int | None = None) -> nn.Module:
    """``loss`` wrapped in :class:`MatryoshkaLoss` when ``args.matryoshka_dims`` names sizes, else ``loss``."""
    parsed = parse_dims(getattr(args, "matryoshka_dims", None), getattr(args, "matryoshka_weights", None),
                        hidden_size)
    return loss if parsed is None else MatryoshkaLoss(loss, *parsed, normalize=normalize)
