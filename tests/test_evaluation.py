"""Metrics through ir_measures, checked against values computed by hand."""
import math

from densir.evaluation import evaluate


def test_metrics_by_hand():
    qrels = {"q1": {"a": 1, "b": 0}, "q2": {"c": 1, "d": 1}, "q3": {"e": 1}}
    run = {"q1": [("x", 3.0), ("a", 2.0)], "q2": [("c", 2.0), ("y", 1.5), ("d", 1.0)]}  # q3 missing
    m = evaluate(qrels, run)
    assert math.isclose(m["MRR@10"], (0.5 + 1.0 + 0.0) / 3)
    assert math.isclose(m["Recall@100"], (1 + 1 + 0) / 3)
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert math.isclose(m["nDCG@10"], (ndcg_q1 + ndcg_q2) / 3, rel_tol=1e-6)
    assert m["queries"] == 3 and m["queries_in_run"] == 2


def test_compare_runs_paired_ttest_against_scipy_by_hand(tmp_path):
    """Per-query nDCG@10 through ir_measures; the t-test is scipy's on those pairs."""
    import numpy as np
    from scipy import stats

    from densir.evaluation import compare_runs, per_query

    qrels = {f"q{i}": {"d1": 1, "d2": 2} for i in range(6)}
    a = {f"q{i}": [("d3", 3.0), ("d1", 2.0), ("d2", 1.0)] for i in range(6)}
    b = {f"q{i}": ([("d2", 3.0), ("d1", 2.0)] if i % 3 else [("d3", 3.0), ("d4", 2.0)]) for i in range(6)}
    r = compare_runs(qrels, a, b)
    pa, pb = per_query(qrels, a, ["nDCG@10"])["nDCG@10"], per_query(qrels, b, ["nDCG@10"])["nDCG@10"]
    x = np.array([pa[q] for q in sorted(pa)])
    y = np.array([pb[q] for q in sorted(pb)])
    assert r["wins"] == 4 and r["losses"] == 2 and r["ties"] == 0
    assert abs(r["p"] - stats.ttest_rel(y, x).pvalue) < 1e-12 and abs(r["delta"] - (y - x).mean()) < 1e-12
