"""Fusion of ranked runs: hybrid dense + BM25 runs, and a re-ranker interpolated with its first stage.

Two ways to fuse any number of runs (``{qid: [(docid, score), ...]}``, best first), query by query:

* **reciprocal rank fusion** (Cormack, Clarke & Buettcher, SIGIR 2009), ``rrf(d) = sum_i 1 / (k + rank_i(d))``
  over the runs that retrieved ``d`` (ranks from 1; ``k = 60`` by default, as in the paper);
* **weighted sum of normalised scores**, ``sum_i w_i * n_i(d)``, where ``n_i`` puts run ``i``'s scores
  for the query on one scale, min-max (``(s - min) / (max - min)``) or z-score (``(s - mean) / sd``).

A document absent from run ``i`` (not among its hits for the query) is no error: under RRF it gets
nothing from that run, under the weighted sum it gets run ``i``'s lowest normalised score for the
query (0 under min-max), as Pyserini's dense-sparse hybrid fills a missing score with the run's
minimum. A query absent from a run gets nothing from it. A run whose scores for a query are all
equal says nothing about their order: they all normalise to 0. The reciprocal ranks and the
summing are ``pyserini.fusion`` (``reciprocal_rank_fusion``, and the ``TrecRun`` rescore-and-merge
that its ``interpolation`` uses, for any number of runs); ties in the fused score are broken by
docid, as there and in :func:`densir.io.write_run`.

The re-ranker's interpolation with its first stage (``densir.driver.rerank --interpolate``,
``tools/fuse_runs.py --first ... --rerank ...``) is the two-run weighted sum with z-scores over the
re-ranked hits alone (:func:`interpolate_hits`); it normalises through the same :func:`normalize`.

Choose ``k``, the weights and the normalisation on held-out *train* queries
(``benchmarks/hybrid_sweep.py``, ``tools/fuse_runs.py --first/--rerank --alpha ... --qrels``),
never on the test split.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

METHODS = ("rrf", "weighted")
NORMS = ("minmax", "zscore")
RRF_K = 60
# pyserini's TrecRun holds a run in a pandas frame: fuse this many queries at a time, so a large
# query set (MS MARCO dev, 6,980 x 1,000 hits per run) never needs all its frames at once
_QUERIES_PER_CHUNK = 1000

Hits = Sequence[tuple[str, float]]
Run = Mapping[str, Hits]


# --------------------------------------------------------------------------- fusion of runs
def fuse(runs: Sequence[Run], method: str = "rrf", *, rrf_k: float = RRF_K, weights: Sequence[float] | None = None,
         norm: str = "minmax", depth: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """Fuse ``runs`` by ``method``: reciprocal rank fusion, or a weighted sum of normalized scores.

    Args:
        runs: ``{qid: [(docid, score), ...]}`` each (e.g. a dense run and BM25's).
        method: ``"rrf"`` (:func:`rrf_fuse`, constant ``rrf_k``) or ``"weighted"`` (:func:`weighted_fuse`:
            ``weights`` per run, scores normalized per query by ``norm``: minmax | zscore).
        depth: fused hits kept per query (None: all).
    Returns:
        the fused run, each query's hits best first.

    Example::

        hybrid = fuse([read_run("round2/test.run"), read_run("bm25.test.run")], "weighted", weights=[0.5, 0.5])
    """
    if method == "rrf":
        return rrf_fuse(runs, rrf_k, depth)
    if method == "weighted":
        return weighted_fuse(runs, weights, norm, depth)
    raise ValueError(f"fusion method must be one of {', '.join(METHODS)}, not {method!r}")


def rrf_fuse(runs: Sequence[Run], k: float = RRF_K, depth: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """Reciprocal rank fusion: ``sum_i 1 / (k + rank_i(d))``, a run's ranks by its descending score
    (its own order among equal scores), the top ``depth`` fused hits of each query (all if None)."""
    from pyserini.fusion import reciprocal_rank_fusion

    _check_runs(runs)
    if not (k >= 0 and math.isfinite(k)):
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    out = {}
    for chunk in _query_chunks(runs):
        trec = [_trec_run(run, chunk, lambda qid, hits: [s for _, s in hits]) for run in runs]
        out.update(_from_trec(reciprocal_rank_fusion(trec, rrf_k=k, k=depth), chunk))
    return out


def weighted_fuse(runs: Sequence[Run], weights: Sequence[float] | None = None, norm: str = "minmax",
                  depth: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """``sum_i w_i * n_i(d)``, ``n_i`` run i's scores for the query normalised by ``norm`` (a
    document absent from run i gets run i's lowest ``n_i``); ``weights`` default to equal ones."""
    from pyserini.trectools import AggregationMethod, RescoreMethod, TrecRun

    _check_runs(runs)
    weights = [1.0 / len(runs)] * len(runs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    if any(not (w >= 0 and math.isfinite(w)) for w in weights) or not any(weights):
        raise ValueError(f"weights must be >= 0 and not all 0, got {weights}")
    if norm not in NORMS:
        raise ValueError(f"normalisation must be one of {', '.join(NORMS)}, not {norm!r}")
    out = {}
    for chunk in _query_chunks(runs):
        # each run's normalised scores minus their minimum: pyserini's merge sums what is there,
        # so an absent document's 0 is the run's minimum; the minima are added back after
        floor = dict.fromkeys(chunk, 0.0)
        scaled = []
        for run, w in zip(runs, weights):
            def shifted(qid, hits, w=w):
                n = normalize([s for _, s in hits], norm)
                low = min(n, default=0.0)
                floor[qid] += w * low  # noqa: B023  called at once, inside this iteration
                return [x - low for x in n]
            scaled.append(_trec_run(run, chunk, shifted).rescore(method=RescoreMethod.SCALE, scale=w))
        fused = _from_trec(TrecRun.merge(scaled, AggregationMethod.SUM, k=depth), chunk)
        out.update({qid: [(d, s + floor[qid]) for d, s in hits] for qid, hits in fused.items()})
    return out


# --------------------------------------------------------------------------- normalisation
def normalize(scores: Sequence[float], norm: str) -> list[float]:
    """One query's scores on one scale: ``"minmax"`` to [0, 1] or ``"zscore"`` to mean 0, sd 1.
    A constant list (or a single hit) maps to zeros under both."""
    if norm == "zscore":
        return zscore(scores)
    if norm == "minmax":
        return minmax(scores)
    raise ValueError(f"normalisation must be one of {', '.join(NORMS)}, not {norm!r}")


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


def minmax(scores: Sequence[float]) -> list[float]:
    """Scale one query's scores to [0, 1]; a constant list (or a single hit) maps to zeros."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi == lo or not math.isfinite(hi - lo):
        return [0.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


# --------------------------------------------------------------------------- re-ranker + first stage
def interpolate_hits(first: Sequence[tuple[str, float]], rerank: Sequence[tuple[str, float]],
                     alpha: float) -> list[tuple[str, float]]:
    """Fuse one query's hits: ``alpha * z(first) + (1 - alpha) * z(rerank)``, sorted by fused score.

    ``rerank`` holds the re-ranked docids (any order); ``first`` the first stage's hits, of which
    only those in ``rerank`` are used (the re-ranked top-k), so both z-scores are over the same
    documents. ``alpha = 0`` is the re-ranker alone, ``alpha = 1`` the first stage alone (same
    order). Ties keep the first stage's order.
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
    z1 = normalize([s for _, s in top], "zscore")
    z2 = normalize([re[d] for d, _ in top], "zscore")
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


def duplicate_hit(run: Run) -> tuple[str, str] | None:
    """The first ``(qid, docid)`` that a query of ``run`` lists twice, or None."""
    for qid, hits in run.items():
        docs = [d for d, _ in hits]
        if len(set(docs)) == len(docs):
            continue
        seen: set[str] = set()
        for d in docs:
            if d in seen:
                return qid, d
            seen.add(d)
    return None


# --------------------------------------------------------------------------- helpers
def _check_runs(runs: Sequence[Run]) -> None:
    if len(runs) < 2:
        raise ValueError(f"fusion needs at least two runs, got {len(runs)}")
    for i, run in enumerate(runs):
        dup = duplicate_hit(run)
        if dup:
            raise ValueError(f"run {i + 1}: query {dup[0]!r} lists docid {dup[1]!r} twice")


def _query_chunks(runs: Sequence[Run]) -> Iterable[list[str]]:
    """Every query of any run, in order of first appearance, in chunks."""
    qids = list(dict.fromkeys(q for run in runs for q in run))
    for i in range(0, len(qids), _QUERIES_PER_CHUNK):
        yield qids[i:i + _QUERIES_PER_CHUNK]


def _trec_run(run: Run, qids: Sequence[str], scores_of):
    """A pyserini ``TrecRun`` of ``run``'s hits for ``qids``, ranked by descending score (stable),
    each query's scores replaced by ``scores_of(qid, sorted hits)``."""
    import pandas as pd
    from pyserini.trectools import TrecRun

    topic, docid, rank, score = [], [], [], []
    for qid in qids:
        hits = sorted(run.get(qid) or (), key=lambda h: -h[1])
        new = scores_of(qid, hits)
        topic += [qid] * len(hits)
        docid += [d for d, _ in hits]
        rank += range(1, len(hits) + 1)
        score += new
    trec = TrecRun()
    trec.run_data = pd.DataFrame({"topic": pd.Series(topic, dtype=object), "q0": "Q0",
                                  "docid": pd.Series(docid, dtype=object), "rank": pd.Series(rank, dtype="int64"),
                                  "score": pd.Series(score, dtype="float64"), "tag": "densir"})
    return trec


def _from_trec(trec, qids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
    """A pyserini ``TrecRun`` (sorted by topic, then score) back to ``{qid: hits}`` in ``qids``' order."""
    df = trec.run_data
    by_q: dict[str, list[tuple[str, float]]] = {}
    for q, d, s in zip(df["topic"].tolist(), df["docid"].tolist(), df["score"].tolist()):
        by_q.setdefault(q, []).append((d, float(s)))
    return {q: by_q[q] for q in qids if q in by_q}
