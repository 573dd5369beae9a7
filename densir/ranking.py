"""Ranking: the one order of hits in densir, its score rounding, ties and top-k merges.

Every ranked list (a run file, a search's or the reducer's hits, the API's) is ordered by
:func:`order_key`: score descending, ties by docid ascending (string order), so any two tools
that rank the same scores write the same list. Run files hold scores to ``SCORE_DECIMALS``
decimals (:func:`format_score`); a search rounds its scores to them *before* ranking
(:func:`rank_rounded`), so that a run searched over all shards at once and per-shard runs merged
by the reducer (which reads rounded scores) rank alike. A search keeps ``TIE_MARGIN`` more
candidates than its depth, so that a tie at the depth cut is broken by docid rather than by
whichever candidate the index returned first.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SCORE_DECIMALS = 6  # the precision of run files
TIE_MARGIN = 16  # candidates kept beyond the depth, so that a tie at the cut is broken by docid

Hit = tuple[str, float]  # (docid, score)


def order_key(hit: Hit) -> tuple[float, str]:
    """The sort key of densir's order: score descending, then docid ascending."""
    return -hit[1], hit[0]


def rank(hits: Iterable[Hit], depth: int | None = None) -> list[Hit]:
    """``hits`` in densir's order, cut to the top ``depth`` (all when None)."""
    return sorted(hits, key=order_key)[:depth]


def round_score(score: float) -> float:
    """A score as a run file holds it (``SCORE_DECIMALS`` decimals)."""
    return round(float(score), SCORE_DECIMALS)


def format_score(score: float) -> str:
    """A score as a run file writes it."""
    return f"{score:.{SCORE_DECIMALS}f}"


def rank_rounded(hits: Iterable[Hit], depth: int | None = None) -> list[Hit]:
    """Scores rounded as run files hold them, then ranked: what a search writes."""
    return rank(((d, round_score(s)) for d, s in hits), depth)


def merge(lists: Iterable[Sequence[Hit]], depth: int | None = None) -> list[Hit]:
    """The top ``depth`` of several hit lists (disjoint docids, e.g. one per passage shard), ranked."""
    return rank((h for hits in lists for h in hits), depth)


def merge_candidates(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray, rows_b: np.ndarray,
                     depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``depth`` of two (scores, ids) candidate sets; stable, so earlier rows win ties.

    The running candidate pool of a search (raw index scores, before :func:`rank_rounded`).
    """
    scores = np.concatenate([scores_a, scores_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
