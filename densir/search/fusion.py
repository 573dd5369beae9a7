"""Score interpolation of a re-ranker with the first stage it re-ranks.

A cross-encoder trained for minutes on a CPU is a weak ranker on its own, but its errors differ
from the retriever's; the standard remedy (e.g. Pyserini's and Tevatron's "hybrid" runs, and
re-ranking papers' ``alpha * first + (1 - alpha) * rerank``) is to interpolate the two scores
per query after putting them on one scale:

    fused(d) = alpha * z(first)(d) + (1 - alpha) * z(rerank)(d)

where ``z`` standardises a query's scores over the re-ranked hits (mean 0, standard deviation
1; all-equal scores become 0). ``alpha = 0`` is the re-ranker alone, ``alpha = 1`` the first
stage alone (same order). Choose ``alpha`` on held-out *train* queries
(``tools/fuse_runs.py --alpha 0 0.1 ... --qrels heldout-qrels``), never on the test split.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def zscore(scores: Sequence[float]) -> list[float]:
    """Standardise one query's scores; a constant list (or a single hit) maps to zeros."""
    n = len(scores)
    if n == 0:
        return []
    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
    if sd == 0.0 or not math.isfinite(sd):
        return [0.0] * n
    return [(s - mean) / sd for s in scores]


def interpolate_hits(first: Sequence[tuple[str, float]], rerank: Sequence[tuple[str, float]],
                     alpha: float) -> list[tuple[str, float]]:
    """Fuse one query's hits: ``alpha * z(first) + (1 - alpha) * z(rerank)``, sorted by fused score.

    ``rerank`` holds the re-ranked docids (any order); ``first`` the first stage's hits, of which
    only those in ``rerank`` are used (the re-ranked top-k). Ties keep the first stage's order.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    re = dict(rerank)
    if len(re) != len(rerank):
        raise ValueError("a docid appears twice in the re-ranked hits")
    top = [(d, s) for d, s in first if d in re]
    if len(top) != len(re):
        missing = sorted(set(re) - {d for d, _ in top})[:3]
        raise ValueError(f"re-ranked docids missing from the first-stage hits: {missing}")
    z1 = zscore([s for _, s in top])
    z2 = zscore([re[d] for d, _ in top])
    fused = [(d, alpha * a + (1.0 - alpha) * b) for (d, _), a, b in zip(top, z1, z2)]
    order = sorted(range(len(fused)), key=lambda i: (-fused[i][1], i))
    return [fused[i] for i in order]


def interpolate_runs(first: dict, rerank: dict, alpha: float, queries: Iterable[str] | None = None) -> dict:
    """:func:`interpolate_hits` for every query of ``rerank`` (or of ``queries``), in that order."""
    out = {}
    for qid in (queries if queries is not None else rerank):
        if qid not in first:
            raise ValueError(f"query {qid!r} of the re-ranked run is not in the first-stage run")
        out[qid] = interpolate_hits(first[qid], rerank[qid], alpha)
    return out
