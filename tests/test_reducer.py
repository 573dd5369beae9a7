"""The reducer: streaming merge of per-shard runs, refusals, bounded memory."""
from __future__ import annotations

import sys

import pytest
from conftest import REPO, run_cmd

from densir.io import InputError, ParameterError, write_run
from densir.search.shard_runs import expand_shard_runs, merge_shard_runs


def test_merge_takes_top_k_with_string_ids(tmp_path):
    write_run(tmp_path / "s0.run", {"q1": [("007", 0.9), ("a", 0.5)], "10": [("b", 0.2)]})
    write_run(tmp_path / "s1.run", {"q1": [("7", 0.7), ("c", 0.5)], "10": [("d", 0.3), ("e", 0.1)]})
    merged = dict(merge_shard_runs([tmp_path / "s0.run", tmp_path / "s1.run"], depth=3))
    assert merged == {"q1": [("007", 0.9), ("7", 0.7), ("a", 0.5)],  # '007' and '7' stay different ids
                      "10": [("d", 0.3), ("b", 0.2), ("e", 0.1)]}


def test_refuses_disagreeing_queries_and_duplicates(tmp_path):
    write_run(tmp_path / "a.run", {"q1": [("x", 1.0)], "q2": [("y", 1.0)]})
    write_run(tmp_path / "b.run", {"q1": [("z", 1.0)]})
    write_run(tmp_path / "c.run", {"q2": [("z", 1.0)], "q1": [("w", 1.0)]})
    write_run(tmp_path / "d.run", {"q1": [("x", 0.5)], "q2": [("v", 1.0)]})
    with pytest.raises(InputError, match=r"b\.run.*ends before query 'q2'.*disagree"):
        list(merge_shard_runs([tmp_path / "a.run", tmp_path / "b.run"], 10))
    with pytest.raises(InputError, match=r"c\.run.*has query 'q2' where .*a\.run has 'q1'"):
        list(merge_shard_runs([tmp_path / "a.run", tmp_path / "c.run"], 10))
    with pytest.raises(InputError, match="docid appears in two shard runs"):
        list(merge_shard_runs([tmp_path / "a.run", tmp_path / "d.run"], 10))


def test_shard_count_is_checked(tmp_path):
    for i in range(3):
        write_run(tmp_path / f"shard.{i}.run", {"q": [(f"d{i}", 1.0)]})
    assert [p.rsplit("/", 1)[1] for p in expand_shard_runs([str(tmp_path / "shard.*.run")], 3)] == \
        ["shard.0.run", "shard.1.run", "shard.2.run"]
    with pytest.raises(ParameterError, match=r"num_shards: .*shard\.\*\.run matched 3 run file.*expected 4"):
        expand_shard_runs([str(tmp_path / "shard.*.run")], 4)
    with pytest.raises(ParameterError, match="num_shards: is required"):
        expand_shard_runs([str(tmp_path / "shard.*.run")], None)
    with pytest.raises(InputError, match="no such run file"):
        expand_shard_runs([str(tmp_path / "shard.9.run")], None)


def test_reducer_memory_is_bounded(tmp_path):
    """8 shards x 2,000 queries x depth 100 (1.6M lines): peak RSS of the reducer process stays small.

    benchmarks/memory_check.py runs the full-size case (8 x 10k x 1000, 80M lines) once.
    """
    proc = run_cmd([sys.executable, str(REPO / "benchmarks" / "memory_check.py"), "reducer", "--workdir",
                    str(tmp_path), "--shards", "8", "--queries", "2000", "--depth", "100"], timeout=600)
    peak_mb = float(proc.stdout.strip().splitlines()[-1].split("peak_rss_mb=")[1].split()[0])
    assert peak_mb < 300, proc.stdout
