"""Ranking: the one order of hits in densir, its score rounding, ties and top-k merges.

Every ranked list (a run file, a search's or the reducer's hits, the API's) is in the order of
:func:`order_key`: score descending, ties by docid ascending, so any two tools that rank the same
scores write the same list. Run files hold ``SCORE_DECIMALS`` decimals; a search rounds its scores
to them *before* ranking, so that a search over all shards at once and per-shard runs merged by the
reducer (which reads rounded scores) rank alike, and keeps ``TIE_MARGIN`` candidates beyond its
depth, so that a tie at the cut is broken by docid, not by the order the index returned them in.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SCORE_DECIMALS = 6
TIE_MARGIN = 16

Hit = tuple[str, float]  # (docid, score)


def order_key(hit: Hit) -> tuple[float, str]:
    """Score descending, then docid ascending."""
    return -hit[1], hit[0]


def rank(hits: Iterable[Hit], depth: int | None = None) -> list[Hit]:
    """``hits`` in densir's order, cut to the top ``depth`` (all when None)."""
    return sorted(hits, key=order_key)[:depth]


def round_score(score: float) -> float:
    """A score as a run file holds it."""
    return round(float(score), SCORE_DECIMALS)


def format_score(score: float) -> str:
    """A score as a run file writes it."""
    return f"{score:.{SCORE_DECIMALS}f}"


def merge(lists: Iterable[Sequence[Hit]], depth: int | None = None) -> list[Hit]:
    """The top ``depth`` of several ranked lists with disjoint docids (e.g. one per passage shard)."""
    return rank((h for hits in lists for h in hits), depth)


def rank_documents(scores, documents: Sequence[str], top_k: int | None = None,
                   return_documents: bool = False) -> list[dict]:
    """The shape sentence-transformers' ``CrossEncoder.rank`` returns for ``scores`` of ``documents``:
    ``[{"corpus_id": index, "score": s[, "text": doc]}]``, best first, ties in input order, top ``top_k``."""
    scores = np.asarray(scores)
    return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
            for i in np.argsort(-scores, kind="stable")[:top_k]]


def merge_candidates(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray, rows_b: np.ndarray,
                     depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``depth`` of two (raw scores, ids) candidate pools; stable, so earlier rows win ties."""
    scores = np.concatenate([scores_a, scores_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
