"""Retrieval metrics through ir_measures (pytrec_eval underneath); nothing hand-rolled.

``evaluate(qrels, run)`` returns ``{"MRR@10", "nDCG@10", "Recall@100", "Recall@1000"}`` averaged
over the judged queries (a judged query the run lacks scores 0, as in trec_eval's ``-c``), plus
``queries`` (how many were judged) and ``queries_in_run``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import ir_measures
from ir_measures import RR, R, nDCG

# our name -> ir_measures measure (trec_eval: recip_rank cut 10, ndcg_cut_10, recall_100/1000)
DEFAULT_METRICS = {
    "MRR@10": RR @ 10,
    "nDCG@10": nDCG @ 10,
    "Recall@100": R @ 100,
    "Recall@1000": R @ 1000,
}


def parse_metric(name: str):
    """Our names (MRR@10, Recall@100) or any ir_measures name (nDCG@10, P@5, AP)."""
    if name in DEFAULT_METRICS:
        return DEFAULT_METRICS[name]
    return ir_measures.parse_measure(name)


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[tuple[str, float]]],
             metrics: Sequence[str] = tuple(DEFAULT_METRICS)) -> dict:
    """Mean metrics of ``run`` over every judged query (ir_measures; a query the run lacks scores 0).

    Args:
        qrels: ``{qid: {docid: relevance}}`` (:func:`densir.read_qrels`).
        run: ``{qid: [(docid, score), ...]}`` (:func:`densir.read_run`).
        metrics: densir's names (``nDCG@10``, ``MRR@10``, ``Recall@100``) or any ir_measures name.
    Returns:
        ``{metric: mean, "queries": judged queries, "queries_in_run": those the run has}``.

    Example::

        evaluate(read_qrels("data/beir-scifact/qrels.test.tsv"), read_run("runs/demo/round2/test.run"),
                 ["nDCG@10"])   # {"nDCG@10": 0.78, "queries": 300, "queries_in_run": 300}
    """
    scores = per_query(qrels, run, metrics)
    judged = _judged(qrels)
    out = {name: (sum(v.values()) / len(judged) if judged else 0.0) for name, v in scores.items()}
    out["queries"] = len(judged)
    out["queries_in_run"] = sum(1 for q in judged if q in run)
    return out


def per_query(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[tuple[str, float]]],
              metrics: Sequence[str] = tuple(DEFAULT_METRICS)) -> dict[str, dict[str, float]]:
    """``{metric: {qid: value}}`` over every judged query (one the run lacks scores 0, trec_eval -c)."""
    measures = {name: parse_metric(name) for name in metrics}
    run_dict = {qid: {docid: float(score) for docid, score in hits} for qid, hits in run.items()}
    judged = _judged(qrels)
    out = {name: dict.fromkeys(judged, 0.0) for name in measures}
    by_measure = {m: name for name, m in measures.items()}
    for m in ir_measures.iter_calc(list(measures.values()), judged, run_dict):
        out[by_measure[m.measure]][m.query_id] = m.value
    return out


def compare_runs(qrels, run_a, run_b, metric: str = "nDCG@10") -> dict:
    """Paired comparison of two runs on the same judged queries: the means, per-query wins/losses/ties
    and a two-sided paired t-test (``scipy.stats.ttest_rel``) of ``b - a``."""
    from scipy.stats import ttest_rel

    a, b = per_query(qrels, run_a, [metric])[metric], per_query(qrels, run_b, [metric])[metric]
    qids = sorted(a)
    x, y = [a[q] for q in qids], [b[q] for q in qids]
    test = ttest_rel(y, x)
    return {"metric": metric, "queries": len(qids), "a": sum(x) / len(x), "b": sum(y) / len(y),
            "delta": (sum(y) - sum(x)) / len(x), "wins": sum(v > u for u, v in zip(x, y)),
            "losses": sum(v < u for u, v in zip(x, y)), "ties": sum(v == u for u, v in zip(x, y)),
            "t": float(test.statistic), "p": float(test.pvalue)}


def _judged(qrels) -> dict:
    return {qid: dict(docs) for qid, docs in qrels.items() if any(r > 0 for r in docs.values())}


def format_table(rows: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = tuple(DEFAULT_METRICS)) -> str:
    """A fixed-width table: one row per system, one column per metric."""
    width = max([len(k) for k in rows] + [6])
    head = f"{'system':<{width}}  " + "  ".join(f"{m:>11}" for m in metrics)
    lines = [head, "-" * len(head)]
    for name, scores in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(
            f"{scores[m]:>11.4f}" if m in scores else f"{'-':>11}" for m in metrics))
    return "\n".join(lines)
