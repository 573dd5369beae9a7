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
