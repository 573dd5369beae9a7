"""The fusion chosen per round (HYBRID=auto) and the held-out train queries it is chosen on.

Fast: tools/choose_fusion.py refuses test qrels (by name, by being the evaluation qrels, by sharing a
query with them): one line, exit 1, nothing written. Slow, on the SciFact slice: get_data.sh HOLDOUT=20
holds 20 train queries out inside DATA_DIR (no train file, BM25 negative, train group or mined group
sees them); run.sh, mine_hard_neg.sh and train_hn.sh with HYBRID=auto choose each round's fusion on
them (R/fusion.json) and fuse the test run by that round's own choice; the choice is the sweep's best
and its score equals an nDCG@10 computed here of a fusion computed here."""
from __future__ import annotations

import json
import math
import shutil

import pytest
from conftest import run_cmd
from test_fusion import independent_rrf, independent_weighted
from test_pipeline import pipeline_env, run_stage_scripts

from densir.formats import iter_train_groups, read_qrels, read_queries
from densir.io import read_run, write_run

HOLDOUT = 20
ROUNDS = ("round1", "round2")


# --------------------------------------------------------------------------- fast: the refusal
@pytest.fixture
def small_runs(tmp_path):
    write_run(tmp_path / "dense.run", {"q1": [("a", 0.9), ("p1", 0.8)], "q2": [("p2", 0.9), ("c", 0.5)]})
    write_run(tmp_path / "bm25.run", {"q1": [("p1", 20.0), ("e", 10.0)], "q2": [("c", 30.0), ("p2", 5.0)]})
    return tmp_path


def choose(tmp_path, qrels, *extra, check=False):
    return run_cmd(["python", "tools/choose_fusion.py", "--dense", str(tmp_path / "dense.run"), "--bm25",
                    str(tmp_path / "bm25.run"), "--qrels", str(qrels), "--out", str(tmp_path / "fusion.json"),
                    *extra], check=check)


@pytest.mark.parametrize("case", ["named-test", "is-the-eval-qrels", "shares-a-query"])
def test_choice_refuses_test_qrels(small_runs, case):
    tmp = small_runs
    (tmp / "qrels.test.tsv").write_text("q1\t0\tp1\t1\nq9\t0\tx\t1\n")
    (tmp / "eval.tsv").write_text("q1\t0\tp1\t1\nq9\t0\tx\t1\n")
    (tmp / "qrels.heldout.tsv").write_text("q1\t0\tp1\t1\nq2\t0\tp2\t1\n")
    qrels, extra, says = {
        "named-test": (tmp / "qrels.test.tsv", [], "looks like a test split"),
        "is-the-eval-qrels": (tmp / "eval.tsv", ["--eval_qrels", str(tmp / "eval.tsv")], "is the evaluation split"),
        "shares-a-query": (tmp / "qrels.heldout.tsv", ["--eval_qrels", str(tmp / "eval.tsv")],
                           "shares 1 queries with the evaluation qrels"),
    }[case]
    proc = choose(tmp, qrels, *extra)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert "never on test" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp / "fusion.json").exists() and not list(tmp.glob("fusion.json*"))


def test_choice_writes_the_sweep_with_its_choice(small_runs):
    tmp = small_runs
    (tmp / "qrels.heldout.tsv").write_text("q1\t0\tp1\t1\nq2\t0\tp2\t1\n")
    (tmp / "eval.tsv").write_text("q7\t0\tp1\t1\n")  # no query shared: accepted
    proc = choose(tmp, tmp / "qrels.heldout.tsv", "--eval_qrels", str(tmp / "eval.tsv"), "--rrf_k", "1", "60",
                  "--alphas", "0", "0.5", "1", check=True)
    sweep = json.loads((tmp / "fusion.json").read_text())
    assert set(sweep["rrf"]) == {"1", "60"} and set(sweep["weighted"]["minmax"]) == {"0", "0.5", "1"}
    best = sweep["best"]["overall"]
    assert sweep["chosen"] == {k: str(v) for k, v in best.items() if k != "nDCG@10"}
    assert "stage settings: HYBRID=" in proc.stdout
    flags = run_cmd(["python", "tools/choose_fusion.py", "--fuse_args", str(tmp / "fusion.json")]).stdout.split()
    assert flags[:2] == ["--method", sweep["chosen"]["HYBRID"]]


# --------------------------------------------------------------------------- slow: the pipeline
def ndcg10(qrels: dict, run: dict) -> float:
    """Mean nDCG@10 (linear gain, log2 discount) over the judged queries, ranked as trec_eval ranks:
    score down, docid down among equals."""
    total = 0.0
    for qid, judged in qrels.items():
        hits = sorted(run.get(qid, {}).items(), key=lambda h: (h[1], h[0]), reverse=True)[:10]
        dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, (d, _) in enumerate(hits))
        ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(qrels)


def top(fused: dict, depth: int) -> dict:
    """Each query's top ``depth`` of an independent fusion (score down, docid up: densir's run order)."""
    return {q: dict(sorted(h.items(), key=lambda x: (-x[1], x[0]))[:depth]) for q, h in fused.items()}


def independent_fusion(dense: dict, bm25: dict, chosen: dict) -> dict:
    if chosen["HYBRID"] == "rrf":
        return independent_rrf([dense, bm25], float(chosen["HYBRID_K"]))
    a = float(chosen["HYBRID_WEIGHT"])
    return independent_weighted([dense, bm25], (a, 1.0 - a), chosen["HYBRID_NORM"])


@pytest.fixture(scope="module")
def holdout_data(tmp_path_factory, slice_zip):
    out = tmp_path_factory.mktemp("slice-holdout") / "data"
    run_cmd(["bash", "get_data.sh", "--dataset", "beir/scifact-slice", "--source", str(slice_zip), "--out_dir",
             str(out), "--threads", "2", "--holdout", str(HOLDOUT), "--eval_depth", "100"],
            env={"OMP_NUM_THREADS": "1"})
    return out


@pytest.fixture(scope="module")
def auto_pipeline(tmp_path_factory, holdout_data, tiny_bert_dir):
    out = tmp_path_factory.mktemp("auto") / "out"
    env = pipeline_env(tiny_bert_dir, holdout_data, out, HYBRID="auto")
    return out, env, run_stage_scripts(env)


@pytest.mark.slow
def test_heldout_queries_are_in_no_train_file(holdout_data, auto_pipeline, slice_data, slice_zip):
    out, _, _ = auto_pipeline
    held = set(read_queries(holdout_data / "queries.heldout.jsonl"))
    assert len(held) == HOLDOUT and set(read_qrels(holdout_data / "qrels.heldout.tsv")) == held
    assert set(read_run(holdout_data / "bm25.heldout.run")) == held
    train = set(read_queries(holdout_data / "queries.train.jsonl"))
    everything = set(read_queries(slice_data / "queries.train.jsonl"))  # the same slice, no holdout
    assert not train & held and train | held == everything
    assert not set(read_qrels(holdout_data / "qrels.train.tsv")) & held
    assert not set(read_run(holdout_data / "bm25.train.run")) & held
    groups = {g["query_id"] for _, g in iter_train_groups(holdout_data / "train.bm25.jsonl")}
    mined = {g["query_id"] for _, g in iter_train_groups(out / "round1" / "train.hn.jsonl")}
    assert groups and mined and not (groups | mined) & held
    manifest = json.loads((holdout_data / "dataset.json").read_text())["heldout"]
    assert manifest == {"split": "train", "n": HOLDOUT, "seed": 0, "train_queries": len(train),
                        "train_groups": len(groups)}
    metrics = json.loads((holdout_data / "bm25.heldout.metrics.json").read_text())
    assert metrics["queries"] == HOLDOUT
    # a rerun with another size is refused, one line, the data untouched
    before = (holdout_data / "queries.train.jsonl").read_bytes()
    bad = run_cmd(["bash", "get_data.sh", "--dataset", "beir/scifact-slice", "--source", str(slice_zip),
                   "--out_dir", str(holdout_data), "--holdout", str(HOLDOUT + 1)], check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
        f"error: {holdout_data} already holds out {HOLDOUT} train queries"), bad.stderr
    assert (holdout_data / "queries.train.jsonl").read_bytes() == before


@pytest.mark.slow
def test_holdout_in_place_of_a_built_directory(slice_data, tmp_path):
    """A directory get_data.sh built without HOLDOUT, split in place afterwards: its BM25 train run and
    groups lose the held-out queries too; the same call again changes nothing."""
    data = tmp_path / "data"
    shutil.copytree(slice_data, data, symlinks=True)
    run_cmd(["python", "tools/holdout_split.py", "--data_dir", str(data), "--in_place", "--n", "15", "--seed", "3"])
    held = set(read_queries(data / "queries.heldout.jsonl"))
    assert len(held) == 15
    train = set(read_queries(data / "queries.train.jsonl"))
    assert train | held == set(read_queries(slice_data / "queries.train.jsonl")) and not train & held
    assert set(read_run(data / "bm25.train.run")) == set(read_run(slice_data / "bm25.train.run")) - held
    groups = [g["query_id"] for _, g in iter_train_groups(data / "train.bm25.jsonl")]
    assert not set(groups) & held and len(groups) == json.loads((data / "dataset.json").read_text())[
        "heldout"]["train_groups"]
    snapshot = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    run_cmd(["python", "tools/holdout_split.py", "--data_dir", str(data), "--in_place", "--n", "15", "--seed", "3"])
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == snapshot


@pytest.mark.slow
def test_each_round_fuses_by_its_own_choice(auto_pipeline, holdout_data, tmp_path):
    out, env, (r1, _, r2) = auto_pipeline
    depth = int(env["EVAL_DEPTH"])
    bm25_test = read_run(holdout_data / "bm25.test.run")
    held = set(read_queries(holdout_data / "queries.heldout.jsonl"))
    for rnd, proc in zip(ROUNDS, (r1, r2)):
        sweep = json.loads((out / rnd / "fusion.json").read_text())
        assert set(read_run(out / rnd / "heldout.run")) == held and sweep["queries"] == HOLDOUT
        assert sweep["dense"].endswith(f"/{rnd}/heldout.run") and sweep["qrels"].endswith("/qrels.heldout.tsv")
        # the hybrid test run is tools/fuse_runs.py with this round's chosen setting, spelled out here
        chosen = sweep["chosen"]
        flags = (["--method", "rrf", "--rrf_k", chosen["HYBRID_K"]] if chosen["HYBRID"] == "rrf" else
                 ["--method", "weighted", "--weights", chosen["HYBRID_WEIGHT"],
                  str(1 - float(chosen["HYBRID_WEIGHT"])), "--norm", chosen["HYBRID_NORM"]])
        ref = tmp_path / f"{rnd}.ref.run"
        run_cmd(["python", "tools/fuse_runs.py", "--runs", str(out / rnd / "test.run"),
                 str(holdout_data / "bm25.test.run"), *flags, "--depth", str(depth), "--out", str(ref)])
        assert_same_run(read_run(out / rnd / "test.hybrid.run"), read_run(ref))
        assert f"step choose-fusion-{rnd}" in proc.stderr and f"{rnd}-hybrid" in proc.stdout
    # round 1's file alone steers round 1: another choice written there, round 1's reduce stage rerun;
    # the module's pipeline is shared, so round 1's files are put back afterwards
    kept = {f: (out / "round1" / f).read_bytes() for f in ("fusion.json", "test.hybrid.run", "test.hybrid.metrics.json")}
    sweep = json.loads(kept["fusion.json"])
    other = {"HYBRID": "rrf", "HYBRID_K": "5"} if sweep["chosen"]["HYBRID"] != "rrf" else \
        {"HYBRID": "weighted", "HYBRID_WEIGHT": "0.8", "HYBRID_NORM": "zscore"}
    sweep["chosen"] = other
    try:
        (out / "round1" / "fusion.json").write_text(json.dumps(sweep))
        for f in ("test.hybrid.run", "test.hybrid.metrics.json"):
            (out / "round1" / f).unlink()
        round2_hybrid = (out / "round2" / "test.hybrid.run").read_bytes()
        run_cmd(["bash", "run.sh", "--stage", "reduce"], env=env)
        got = read_run(out / "round1" / "test.hybrid.run")
        want = top(independent_fusion(read_run(out / "round1" / "test.run"), bm25_test, other), depth)
        assert set(got) == set(want)
        for qid, hits in got.items():
            assert [s for _, s in hits] == pytest.approx(sorted(want[qid].values(), reverse=True), abs=1e-6), qid
        assert (out / "round2" / "test.hybrid.run").read_bytes() == round2_hybrid
    finally:
        for f, data in kept.items():
            (out / "round1" / f).write_bytes(data)


def assert_same_run(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for qid in a:
        assert [d for d, _ in a[qid]] == [d for d, _ in b[qid]], qid
        assert [s for _, s in a[qid]] == pytest.approx([s for _, s in b[qid]], abs=1e-6)


@pytest.mark.slow
def test_the_choice_is_the_best_of_the_sweep_scored_independently(auto_pipeline, holdout_data):
    """On the slice's held-out queries: the chosen fusion is the sweep's best by nDCG@10, and its
    nDCG@10 is that of a fusion computed here (test_fusion's), scored here."""
    out, env, _ = auto_pipeline
    qrels = read_qrels(holdout_data / "qrels.heldout.tsv")
    bm25 = read_run(holdout_data / "bm25.heldout.run")
    for rnd in ROUNDS:
        sweep = json.loads((out / rnd / "fusion.json").read_text())
        scores = [m["nDCG@10"] for m in sweep["rrf"].values()] + \
                 [m["nDCG@10"] for w in sweep["weighted"].values() for m in w.values()]
        assert len(scores) == 11 + 2 * 11
        best = sweep["best"]["overall"]
        assert best["nDCG@10"] == max(scores)
        assert sweep["chosen"] == {k: str(v) for k, v in best.items() if k != "nDCG@10"}
        fused = top(independent_fusion(read_run(out / rnd / "heldout.run"), bm25, sweep["chosen"]),
                    int(env["EVAL_DEPTH"]))
        assert ndcg10(qrels, fused) == pytest.approx(best["nDCG@10"], abs=1e-4)
        dense = {q: dict(h) for q, h in read_run(out / rnd / "heldout.run").items()}
        assert ndcg10(qrels, dense) == pytest.approx(sweep["inputs"]["dense"]["nDCG@10"], abs=1e-4)


@pytest.mark.slow
def test_auto_without_heldout_queries_is_one_line_before_any_work(slice_data, tiny_bert_dir, tmp_path):
    for script, extra in (("run.sh", {"HYBRID": "auto"}), ("train_hn.sh", {"HYBRID": "auto"}),
                          ("run.sh", {"VALIDATE": "1"})):
        env = pipeline_env(tiny_bert_dir, slice_data, tmp_path / "out", **extra)
        proc = run_cmd(["bash", script], env=env, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "held-out train queries needed" in lines[0] and "HOLDOUT" in lines[0], proc.stderr
        assert not (tmp_path / "out").exists()
    # only where they are used: mine_hard_neg.sh (no round of its own) and run.sh's encode-corpus stage do not
    # ask for held-out queries (they stop, if at all, for what they lack themselves)
    for script, extra in (("mine_hard_neg.sh", {"HYBRID": "auto", "VALIDATE": "1"}),
                          ("run.sh", {"HYBRID": "auto", "STAGE": "encode-corpus"})):
        env = pipeline_env(tiny_bert_dir, slice_data, tmp_path / "out2", **extra)
        proc = run_cmd(["bash", script], env=env, check=False)
        assert "held-out train queries needed" not in proc.stderr, (script, proc.stderr)


@pytest.mark.slow
def test_validate_scores_the_heldout_queries_each_epoch(holdout_data, tiny_bert_dir, tmp_path):
    """VALIDATE=1: run.sh's training scores DATA_DIR's held-out queries once per epoch and keeps the
    best epoch's checkpoint (train_summary.json's eval history and best checkpoint)."""
    env = pipeline_env(tiny_bert_dir, holdout_data, tmp_path / "out", VALIDATE="1", MAX_STEPS="-1", EPOCHS="2",
                       BATCH="16")
    proc = run_cmd(["bash", "run.sh", "--stage", "train"], env=env, timeout=900)
    assert "--eval_queries" in proc.stderr and "--eval_strategy epoch" in proc.stderr
    summary = json.loads((tmp_path / "out" / "round1" / "model" / "train_summary.json").read_text())
    history = summary["eval_history"]
    steps_per_epoch = math.ceil(len(read_queries(holdout_data / "queries.train.jsonl")) / 16)
    assert [h["step"] for h in history] == [steps_per_epoch, 2 * steps_per_epoch]
    assert all(0.0 <= h["eval_nDCG@10"] <= 1.0 for h in history)
    best = max(history, key=lambda h: (h["eval_nDCG@10"], -h["step"]))
    assert summary["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")
