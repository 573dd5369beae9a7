"""densir.search.fusion: per-query z-score interpolation of a re-ranker with its first stage, the
tools/fuse_runs.py CLI that sweeps alpha on held-out qrels; hybrid fusion (RRF, weighted min-max /
z-score) of real SciFact runs (get_data.sh's BM25, all-MiniLM-L6-v2) against an independent
computation written here, missing documents and queries, and the CLI's hybrid mode."""
import json

import numpy as np
import pytest
from conftest import run_cmd

from densir.io import read_run, write_run
from densir.search.fusion import interpolate_hits, interpolate_runs, zscore


def test_zscore():
    np.testing.assert_allclose(zscore([1.0, 2.0, 3.0]), [-1.224744871, 0.0, 1.224744871])
    assert zscore([5.0, 5.0]) == [0.0, 0.0] and zscore([3.0]) == [0.0] and zscore([]) == []


def test_interpolate_hits_ends_and_middle():
    first = [("a", 30.0), ("b", 20.0), ("c", 10.0), ("d", 5.0)]  # d was not re-ranked (below depth)
    ce = [("c", 2.0), ("a", 1.0), ("b", 0.0)]
    assert [d for d, _ in interpolate_hits(first, ce, 1.0)] == ["a", "b", "c"]
    assert [d for d, _ in interpolate_hits(first, ce, 0.0)] == ["c", "a", "b"]
    mid = dict(interpolate_hits(first, ce, 0.5))
    z1, z2 = zscore([30.0, 20.0, 10.0]), zscore([1.0, 0.0, 2.0])
    for i, doc in enumerate("abc"):
        assert mid[doc] == pytest.approx(0.5 * z1[i] + 0.5 * z2[i])
    # scale-free: multiplying either score list by a positive constant changes nothing
    scaled = dict(interpolate_hits([(d, 100 * s) for d, s in first], [(d, s / 7) for d, s in ce], 0.5))
    assert scaled == pytest.approx(mid)


def test_interpolate_ties_keep_the_first_stage_order():
    first = [("x", 3.0), ("y", 2.0), ("z", 1.0)]
    tied = interpolate_hits(first, [("z", 1.0), ("y", 1.0), ("x", 1.0)], 0.0)  # constant CE: all fused 0
    assert [d for d, _ in tied] == ["x", "y", "z"] and all(s == 0.0 for _, s in tied)
    agree = [("z", 1.0), ("y", 2.0), ("x", 3.0)]  # the CE agrees with the first stage
    assert [d for d, _ in interpolate_hits(first, agree, 0.3)] == ["x", "y", "z"]


def test_interpolate_errors():
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate_hits([("a", 1.0)], [("a", 1.0)], -0.1)
    with pytest.raises(ValueError, match="missing from the first-stage hits"):
        interpolate_hits([("a", 1.0)], [("a", 1.0), ("ghost", 2.0)], 0.5)
    with pytest.raises(ValueError, match="not in the first-stage run"):
        interpolate_runs({"q1": [("a", 1.0)]}, {"q2": [("a", 1.0)]}, 0.5)


def test_fuse_runs_cli_sweep_and_write(tmp_path):
    first = {"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("d", 3.0), ("e", 2.0), ("f", 1.0)]}
    ce = {"q1": [("c", 9.0), ("a", 1.0), ("b", 0.0)], "q2": [("f", 5.0), ("e", 4.0), ("d", 0.0)]}
    write_run(tmp_path / "first.run", first)
    write_run(tmp_path / "ce.run", ce)
    (tmp_path / "qrels.tsv").write_text("q1\t0\tc\t1\nq2\t0\td\t1\n")
    proc = run_cmd(["python", "tools/fuse_runs.py", "--first", str(tmp_path / "first.run"), "--rerank",
                    str(tmp_path / "ce.run"), "--alpha", "0", "1", "--qrels", str(tmp_path / "qrels.tsv"),
                    "--sweep", str(tmp_path / "sweep.json")])
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    # q1's positive c: CE rank 1, first-stage rank 3; q2's d: CE rank 3, first-stage rank 1
    assert sweep["metrics"]["0"]["MRR@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert sweep["metrics"]["1"]["MRR@10"] == pytest.approx((1 / 3 + 1) / 2)
    assert "alpha 0 " in proc.stdout and "best nDCG@10" in proc.stdout
    run_cmd(["python", "tools/fuse_runs.py", "--first", str(tmp_path / "first.run"), "--rerank",
             str(tmp_path / "ce.run"), "--alpha", "0", "--out", str(tmp_path / "out.run")])
    assert [d for d, _ in read_run(tmp_path / "out.run")["q1"]] == ["c", "a", "b"]
    bad = run_cmd(["python", "tools/fuse_runs.py", "--first", str(tmp_path / "first.run"), "--rerank",
                   str(tmp_path / "ce.run"), "--alpha", "0", "1", "--out", str(tmp_path / "x.run")], check=False)
    assert bad.returncode == 2 and "--out takes exactly one --alpha" in bad.stderr


# --------------------------------------------------------------------------- hybrid fusion on real runs
N_QUERIES, DEPTH = 12, 30


@pytest.fixture(scope="module")
def real_runs(scifact_data, minilm_path):
    """Three real runs of 12 SciFact test queries: get_data.sh's BM25 run (top 30), and all-MiniLM-L6-v2
    over the union of those queries' BM25 top 30 (passages cut at 128 and at 32 tokens; top 30 each),
    so every run has documents the others lack."""
    import torch

    from densir.formats import passage_text, read_corpus, read_queries
    from densir.retriever.encode import encode_texts
    from densir.retriever.modeling import DenseEncoder

    bm25_all = read_run(scifact_data / "bm25.test.run")
    qids = list(bm25_all)[:N_QUERIES]
    bm25 = {q: bm25_all[q][:DEPTH] for q in qids}
    docs = sorted({d for hits in bm25.values() for d, _ in hits})
    corpus = read_corpus(scifact_data / "corpus.jsonl")
    queries = read_queries(scifact_data / "queries.test.jsonl")
    torch.set_num_threads(1)
    enc = DenseEncoder.load(minilm_path).eval()
    q = encode_texts(enc, [queries[i] for i in qids], "query", 64, 32)
    dense = []
    for p_max_len in (128, 32):
        p = encode_texts(enc, [passage_text(*corpus[d]) for d in docs], "passage", p_max_len, 64)
        scores = q @ p.T
        dense.append({qid: [(docs[j], float(scores[i, j])) for j in np.argsort(-scores[i], kind="stable")[:DEPTH]]
                      for i, qid in enumerate(qids)})
    return [dense[0], bm25, dense[1]]


def rank_of(hits):
    """1-based ranks by descending score, file order among equals."""
    return {d: r for r, (d, _) in enumerate(sorted(hits, key=lambda h: -h[1]), 1)}


def independent_rrf(runs, k):
    out = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        fused = {}
        for run in runs:
            for d, r in rank_of(run.get(qid, [])).items():
                fused[d] = fused.get(d, 0.0) + 1.0 / (k + r)
        out[qid] = fused
    return out


def independent_weighted(runs, weights, norm):
    out = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        docs = {d for run in runs for d, _ in run.get(qid, [])}
        fused = dict.fromkeys(docs, 0.0)
        for run, w in zip(runs, weights):
            if not run.get(qid):
                continue
            ids = [d for d, _ in run[qid]]
            s = np.array([x for _, x in run[qid]], dtype=np.float64)
            if norm == "minmax":
                n = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(s)
            else:
                n = (s - s.mean()) / s.std() if s.std() > 0 else np.zeros_like(s)
            mine = dict(zip(ids, n))
            for d in docs:  # absent: the run's lowest normalised score
                fused[d] += w * mine.get(d, n.min())
        out[qid] = fused
    return out


def assert_same_fusion(got, expected, depth=None):
    """Same queries, the same top-``depth`` documents in the same order (score down, docid up), same scores."""
    assert list(got) == list(expected)
    for qid, hits in got.items():
        want = sorted(expected[qid].items(), key=lambda h: (-round(h[1], 9), h[0]))[:depth]
        assert [d for d, _ in hits] == [d for d, _ in want], qid
        assert [s for _, s in hits] == pytest.approx([s for _, s in want], rel=1e-9, abs=1e-12)


def test_real_runs_overlap_only_in_part(real_runs):
    dense, bm25, short = real_runs
    for qid in bm25:
        a, b = {d for d, _ in dense[qid]}, {d for d, _ in bm25[qid]}
        assert a - b and b - a  # documents missing from one run: the case fusion must handle
    assert any({d for d, _ in short[q]} != {d for d, _ in dense[q]} for q in dense)


@pytest.mark.parametrize("k,depth", [(60, None), (10, 20), (0, 5)])
def test_rrf_equals_an_independent_computation(real_runs, k, depth):
    from densir.search.fusion import fuse

    got = fuse(real_runs[:2], "rrf", rrf_k=k, depth=depth)
    assert_same_fusion(got, independent_rrf(real_runs[:2], k), depth)
    assert_same_fusion(fuse(real_runs, "rrf", rrf_k=k, depth=depth), independent_rrf(real_runs, k), depth)


@pytest.mark.parametrize("norm", ["minmax", "zscore"])
@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.2), (1.0, 0.0)])
def test_weighted_equals_an_independent_computation(real_runs, norm, weights):
    from densir.search.fusion import fuse

    got = fuse(real_runs[:2], "weighted", weights=weights, norm=norm, depth=25)
    assert_same_fusion(got, independent_weighted(real_runs[:2], weights, norm), 25)
    three = (0.5, 0.3, 0.2)
    assert_same_fusion(fuse(real_runs, "weighted", weights=three, norm=norm),
                       independent_weighted(real_runs, three, norm))


def test_weighted_scale_free_and_default_weights(real_runs):
    """A positive scale or shift of one run's scores changes nothing; no weights = equal weights."""
    from densir.search.fusion import fuse

    dense, bm25 = real_runs[:2]
    moved = {q: [(d, 40.0 * s - 3.0) for d, s in hits] for q, hits in bm25.items()}
    for norm in ("minmax", "zscore"):
        a = fuse([dense, bm25], "weighted", weights=(0.6, 0.4), norm=norm)
        b = fuse([dense, moved], "weighted", weights=(0.6, 0.4), norm=norm)
        assert list(a) == list(b) and all([d for d, _ in a[q]] == [d for d, _ in b[q]] for q in a)
        eq = fuse([dense, bm25], "weighted", norm=norm)
        assert_same_fusion(eq, independent_weighted([dense, bm25], (0.5, 0.5), norm))


def test_missing_documents_and_queries_are_absent_not_errors():
    from densir.search.fusion import fuse

    a = {"q1": [("x", 3.0), ("y", 2.0), ("z", 1.0)], "q2": [("u", 5.0)]}
    b = {"q1": [("w", 9.0), ("x", 1.0)], "q3": [("v", 1.0), ("t", 0.5)]}
    rrf = fuse([a, b], "rrf", rrf_k=60)
    assert list(rrf) == ["q1", "q2", "q3"]  # first appearance over the runs
    assert dict(rrf["q1"]) == pytest.approx({"x": 1 / 61 + 1 / 62, "w": 1 / 61, "y": 1 / 62, "z": 1 / 63})
    assert rrf["q2"] == [("u", pytest.approx(1 / 61))] and [d for d, _ in rrf["q3"]] == ["v", "t"]
    mm = dict(fuse([a, b], "weighted", weights=(0.5, 0.5), norm="minmax")["q1"])
    # y and z are absent from b: b's minimum (0); w is absent from a: a's minimum (0)
    assert mm == pytest.approx({"x": 0.5 * 1.0 + 0.5 * 0.0, "y": 0.5 * 0.5, "z": 0.0, "w": 0.5 * 1.0})
    zs = dict(fuse([a, b], "weighted", weights=(0.5, 0.5), norm="zscore")["q1"])
    za, zb = zscore([3.0, 2.0, 1.0]), zscore([9.0, 1.0])
    assert zs == pytest.approx({"x": 0.5 * za[0] + 0.5 * zb[1], "y": 0.5 * za[1] + 0.5 * zb[1],
                                "z": 0.5 * za[2] + 0.5 * zb[1], "w": 0.5 * za[2] + 0.5 * zb[0]})


def test_fusion_errors():
    from densir.search.fusion import fuse, minmax, normalize

    run = {"q": [("a", 1.0), ("b", 0.0)]}
    with pytest.raises(ValueError, match="at least two runs"):
        fuse([run], "rrf")
    with pytest.raises(ValueError, match="2 weights for 3 runs"):
        fuse([run, run, run], "weighted", weights=(1, 1))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        fuse([run, run], "weighted", weights=(1, -1))
    with pytest.raises(ValueError, match="lists docid 'a' twice"):
        fuse([run, {"q": [("a", 1.0), ("a", 0.5)]}], "rrf")
    with pytest.raises(ValueError, match="fusion method must be"):
        fuse([run, run], "borda")
    with pytest.raises(ValueError, match="normalisation must be"):
        normalize([1.0], "l2")
    assert minmax([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5] and minmax([7.0, 7.0]) == [0.0, 0.0] and minmax([]) == []


def test_fuse_runs_cli_hybrid(tmp_path, real_runs, scifact_data):
    from densir.search.fusion import fuse

    paths = []
    for name, run in zip(("dense", "bm25"), real_runs[:2]):
        paths.append(tmp_path / f"{name}.run")
        write_run(paths[-1], run)
    files = [read_run(p) for p in paths]  # what the CLI reads back (scores at 6 decimals)
    out = tmp_path / "hybrid.run"
    proc = run_cmd(["python", "tools/fuse_runs.py", "--runs", *map(str, paths), "--method", "rrf", "--rrf_k", "60",
                    "--depth", "20", "--out", str(out), "--qrels", str(scifact_data / "qrels.test.tsv")])
    assert f"rrf k=60: {N_QUERIES} queries -> {out}" in proc.stdout and "nDCG@10" in proc.stdout
    got = read_run(out)
    want = fuse(files, "rrf", rrf_k=60, depth=20)  # the file's scores are rounded to 6 decimals
    assert list(got) == list(want)
    for qid in want:
        assert [d for d, _ in got[qid]] == [d for d, _ in want[qid]]
        assert [s for _, s in got[qid]] == pytest.approx([s for _, s in want[qid]], abs=1e-6)
    proc = run_cmd(["python", "tools/fuse_runs.py", "--runs", *map(str, paths), "--method", "weighted",
                    "--weights", "0.7", "0.3", "--norm", "minmax", "--out", str(out)])
    want = independent_weighted(files, (0.7, 0.3), "minmax")
    got = read_run(out)
    for qid in want:
        assert dict(got[qid]) == pytest.approx(want[qid], abs=1e-6)
    # one-line errors: a bad run line names file:line; bad settings are usage errors
    bad = tmp_path / "bad.run"
    bad.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 oops t\n")
    proc = run_cmd(["python", "tools/fuse_runs.py", "--runs", str(paths[0]), str(bad), "--out", str(out)], check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {bad}:2: field 'score': not a number: 'oops'"
    proc = run_cmd(["python", "tools/fuse_runs.py", "--runs", *map(str, paths), "--method", "weighted",
                    "--weights", "1", "--out", str(out)], check=False)
    assert proc.returncode == 2 and "one weight per run: 1 for 2 runs" in proc.stderr
    proc = run_cmd(["python", "tools/fuse_runs.py", "--runs", str(paths[0]), "--out", str(out)], check=False)
    assert proc.returncode == 2 and "two or more runs" in proc.stderr
