"""tools/score_to_marco.py and tools/evaluate.py on a small run."""
from __future__ import annotations

import json

import pytest
from conftest import run_cmd

from densir.formats import write_qrels
from densir.io import write_run


@pytest.fixture
def run_and_qrels(tmp_path):
    run = {"q1": [("d1", 0.9), ("d2", 0.8), ("d3", 0.1)], "0042": [("d9", 2.0), ("d3", 1.0)]}
    write_run(tmp_path / "run.trec", run)
    write_qrels(tmp_path / "qrels.tsv", {"q1": {"d2": 1}, "0042": {"d9": 1}, "q3": {"d1": 1}})
    return tmp_path


def test_score_to_marco(run_and_qrels):
    tmp = run_and_qrels
    proc = run_cmd(["python", "tools/score_to_marco.py", str(tmp / "run.trec"), "--out", str(tmp / "run.tsv")])
    assert "2 queries" in proc.stdout
    assert (tmp / "run.tsv").read_text().splitlines() == [
        "q1\td1\t1", "q1\td2\t2", "q1\td3\t3", "0042\td9\t1", "0042\td3\t2"]
    run_cmd(["python", "tools/score_to_marco.py", str(tmp / "run.trec"), "--depth", "1"])
    assert (tmp / "run.trec.marco").read_text().splitlines() == ["q1\td1\t1", "0042\td9\t1"]


def test_evaluate_cli_prints_and_saves(run_and_qrels):
    tmp = run_and_qrels
    proc = run_cmd(["python", "tools/evaluate.py", str(tmp / "qrels.tsv"), str(tmp / "run.trec"),
                    "--save", str(tmp / "m.json")])
    scores = json.loads((tmp / "m.json").read_text())
    # q1: relevant at rank 2, 0042: rank 1, q3 judged but absent -> 0 (trec_eval -c)
    assert scores["MRR@10"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert scores["Recall@100"] == pytest.approx(2 / 3)
    assert "nDCG@10" in proc.stdout and scores["queries"] == 3
