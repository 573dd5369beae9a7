"""densir.search.fusion: per-query z-score interpolation of a re-ranker with its first stage, and the
tools/fuse_runs.py CLI that sweeps alpha on held-out qrels."""
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
                    "--save", str(tmp_path / "sweep.json")])
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
