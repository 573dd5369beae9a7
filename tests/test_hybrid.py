"""The hybrid stage of run.sh and train_hn.sh on tests/test_pipeline.py's SciFact slice: every round's
test run fused with get_data.sh's BM25 run into <round>/test.hybrid.run, scored, shown in the table,
and equal to an RRF (or a weighted sum) computed here from the two run files; the settings checked."""
from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import run_cmd
from test_fusion import independent_rrf, independent_weighted

from densir.io import read_run

ROUNDS = ("zeroshot", "round1", "round2")
METRICS = ("MRR@10", "nDCG@10", "Recall@100", "Recall@1000")


def assert_file_matches(path, expected: dict, depth: int) -> None:
    """The run file holds each query's top ``depth`` of ``expected`` (score down, docid up), its scores
    to the file's 6 decimals."""
    got = read_run(path)
    assert set(got) == set(expected)
    for qid, hits in got.items():
        want = sorted(expected[qid].items(), key=lambda h: (-h[1], h[0]))[:depth]
        assert [d for d, _ in hits] == [d for d, _ in want], qid
        assert [s for _, s in hits] == pytest.approx([s for _, s in want], abs=1e-6)
    ranks = [int(line.split()[3]) for line in path.read_text().splitlines()]
    assert ranks[0] == 1


@pytest.mark.slow
def test_hybrid_run_of_every_round_is_an_rrf_of_dense_and_bm25(bash_pipeline, slice_data):
    out, env, (r1, _, r2) = bash_pipeline
    depth = int(env["EVAL_DEPTH"])
    bm25 = read_run(slice_data / "bm25.test.run")
    n_test = sum(1 for _ in open(slice_data / "queries.test.jsonl"))
    for rnd in ROUNDS:
        hybrid = out / rnd / "test.hybrid.run"
        dense = read_run(out / rnd / "test.run")
        assert_file_matches(hybrid, independent_rrf([dense, bm25], 60), depth)
        m = json.loads((out / rnd / "test.hybrid.metrics.json").read_text())
        assert all(0.0 <= m[k] <= 1.0 for k in METRICS) and m["queries"] == n_test == m["queries_in_run"]
        assert m["run"] == str(hybrid)
    # the tables: each round's hybrid row right after it
    names = [line.split()[0] for line in (out / "test.table.txt").read_text().splitlines()[2:]]
    assert names == ["BM25", "zeroshot", "zeroshot-hybrid", "round1", "round1-hybrid", "round2", "round2-hybrid"]
    for proc, rows in ((r1, ("zeroshot-hybrid", "round1-hybrid")), (r2, ("round2-hybrid",))):
        for name in rows:
            assert re.search(rf"^{name}(\s+[01]\.\d{{4}}){{4}}$", proc.stdout, re.M), proc.stdout
    assert "step hybrid-round1-test" in r1.stderr and "step hybrid-round2-test" in r2.stderr


@pytest.mark.slow
def test_weighted_hybrid_and_the_settings(bash_pipeline, slice_data, tmp_path):
    """run.sh's reduce stage over a copy of round 1's run: HYBRID=weighted (dense weight 0.7, min-max)
    equals the weighted sum computed here; HYBRID=none writes no hybrid; bad settings are refused."""
    out, env, _ = bash_pipeline
    other = tmp_path / "out"
    (other / "round1").mkdir(parents=True)
    shutil.copy(out / "round1" / "test.run", other / "round1" / "test.run")
    env = dict(env, OUT_DIR=str(other), ZERO_SHOT="0")
    proc = run_cmd(["bash", "run.sh", "--stage", "reduce", "--hybrid", "weighted", "--hybrid_weight", "0.7",
                    "--hybrid_norm", "minmax"], env=env)
    dense, bm25 = read_run(other / "round1" / "test.run"), read_run(slice_data / "bm25.test.run")
    assert_file_matches(other / "round1" / "test.hybrid.run",
                        independent_weighted([dense, bm25], (0.7, 0.3), "minmax"), int(env["EVAL_DEPTH"]))
    assert "round1-hybrid" in proc.stdout
    # HYBRID=none: no hybrid run, no hybrid row
    (other / "round1" / "test.hybrid.run").unlink()
    proc = run_cmd(["bash", "run.sh", "--stage", "reduce"], env=dict(env, HYBRID="none"))
    assert not (other / "round1" / "test.hybrid.run").exists() and "round1-hybrid" not in proc.stdout
    for flag, value, message in (("--hybrid", "borda", "HYBRID must be rrf, weighted, auto or none, not 'borda'"),
                                 ("--hybrid_weight", "1.5", "HYBRID_WEIGHT must be a number in [0, 1]"),
                                 ("--hybrid_k", "-1", "HYBRID_K must be a number >= 0"),
                                 ("--hybrid_norm", "l2", "HYBRID_NORM must be minmax or zscore")):
        bad = run_cmd(["bash", "train_hn.sh", "--stage", "reduce", flag, value], env=env, check=False)
        assert bad.returncode == 1 and message in bad.stderr, bad.stderr


def test_hybrid_sweep_scores_every_setting_and_refuses_test_qrels(tmp_path):
    """benchmarks/hybrid_sweep.py on two small runs whose fusions are worked out by hand."""
    from densir.io import write_run

    dense = {"q1": [("a", 0.9), ("p1", 0.8), ("b", 0.1)], "q2": [("c", 0.9), ("d", 0.5), ("p2", 0.4), ("g", 0.1)]}
    bm25 = {"q1": [("a", 20.0), ("e", 10.0), ("p1", 5.0), ("h", 1.0)], "q2": [("p2", 30.0), ("c", 5.0), ("f", 1.0)]}
    write_run(tmp_path / "dense.run", dense)
    write_run(tmp_path / "bm25.run", bm25)
    (tmp_path / "qrels.heldout.tsv").write_text("q1\t0\tp1\t1\nq2\t0\tp2\t1\n")
    out = tmp_path / "sweep.json"
    args = ["python", "benchmarks/hybrid_sweep.py", "--dense", str(tmp_path / "dense.run"), "--bm25",
            str(tmp_path / "bm25.run"), "--out", str(out), "--rrf_k", "1", "60", "--alphas", "0", "0.5", "1"]
    proc = run_cmd(args + ["--qrels", str(tmp_path / "qrels.heldout.tsv")])
    sweep = json.loads(out.read_text())
    assert set(sweep["rrf"]) == {"1", "60"} and set(sweep["weighted"]) == {"minmax", "zscore"}
    assert set(sweep["weighted"]["zscore"]) == {"0", "0.5", "1"}
    # RRF k=60: q1 a 2/61 > p1 1/62 + 1/63 > e 1/62; q2 c 1/61 + 1/62 > p2 1/61 + 1/63: both positives 2nd
    assert sweep["rrf"]["60"]["MRR@10"] == pytest.approx(0.5)
    # alpha 1 ranks as the dense run, alpha 0 as BM25 (the other run's documents tied at the bottom)
    assert sweep["weighted"]["minmax"]["1"]["MRR@10"] == pytest.approx(sweep["inputs"]["dense"]["MRR@10"])
    assert sweep["weighted"]["zscore"]["0"]["nDCG@10"] == pytest.approx(sweep["inputs"]["bm25"]["nDCG@10"])
    best = sweep["best"]["overall"]
    assert best["nDCG@10"] == max([m["nDCG@10"] for m in sweep["rrf"].values()] +
                                  [m["nDCG@10"] for w in sweep["weighted"].values() for m in w.values()])
    assert "stage settings: HYBRID=" in proc.stdout
    (tmp_path / "qrels.test.tsv").write_text("q1\t0\tp1\t1\n")
    bad = run_cmd(args + ["--qrels", str(tmp_path / "qrels.test.tsv")], check=False)
    assert bad.returncode == 2 and "never on test" in bad.stderr
