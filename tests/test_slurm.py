"""slurm/submit_pipeline.sh on a real one-node SLURM cluster (Debian's slurm-wlm, started by the
recipe in ../shared/slurm-local/ for this session and stopped afterwards), on the same SciFact
slice and settings as tests/test_pipeline.py: array tasks encode and search one shard each,
afterok dependencies order the stages, the final run equals the bash scripts' run, and a stage
made to fail cancels every job that depends on it.

Skipped when sbatch is absent and the cluster cannot be started here (not root, no apt, no
../shared/slurm-local). If a cluster is already answering, it is used and left running.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import SBIN_PATH, assert_same_run, job_field, job_states, run_cmd, wait_for
from test_pipeline import SETTINGS, check_round, pipeline_env

from densir.io import read_run

# the session fixtures of the bash e2e test (same slice, and the bash run to compare with) are conftest's

pytestmark = pytest.mark.slow

def submit(env: dict) -> dict:
    # the jobs inherit this environment (sbatch --export=ALL): the venv's python first on PATH
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}:{SBIN_PATH}"
    proc = run_cmd(["bash", "slurm/submit_pipeline.sh"], env=dict(env, PATH=path))
    jobs = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    assert list(jobs) == ["get_data", "train-round1", "encode-corpus-round1", "encode-queries-round1",
                          "search-round1", "reduce-round1", "encode-queries-mine", "search-mine", "build-hn",
                          "train-round2", "encode-corpus-round2", "encode-queries-round2", "search-round2",
                          "reduce-round2"]
    return jobs


def test_pipeline_as_slurm_jobs_equals_bash_run(slurm_cluster, tmp_path, slice_zip, bash_pipeline, tiny_bert_dir):
    bash_out, bash_env, _ = bash_pipeline
    out, data = tmp_path / "out", tmp_path / "data"
    env = pipeline_env(tiny_bert_dir, data, out, SOURCE=str(slice_zip), DATASET="beir/scifact-slice",
                       CPUS_PER_TASK="1", TIME="30")
    jobs = submit(env)
    # the dependents wait: nothing after get_data may have started while get_data is pending/running
    wait_for(jobs.values())
    logs = out / "slurm"
    bad = {name: job_states(i) for name, i in jobs.items() if set(job_states(i)) != {"COMPLETED"}}
    assert not bad, (bad, {p.name: p.read_text()[-3000:] for p in logs.glob("*.out")})
    n = int(SETTINGS["NUM_SHARDS"])
    # encode and search ran as arrays, one shard per task, each task in its own job
    for name in ("encode-corpus-round1", "search-round1", "search-mine", "encode-corpus-round2", "search-round2"):
        assert job_states(jobs[name]) == ["COMPLETED"] * n
        task_logs = sorted(logs.glob(f"densir-{name}_{jobs[name]}_*.out"))
        assert len(task_logs) == n
        for i, log in enumerate(task_logs):
            assert f"_{i}.out" in log.name
            text = log.read_text()
            own = [line for line in text.splitlines() if "] step " in line]
            assert own and all(line.split("] step ")[1].split(" ->")[0].endswith(f"-{i}") for line in own), text
    for rnd in ("round1", "round2"):
        check_round(out, rnd, data, n, int(SETTINGS["EVAL_DEPTH"]))
    # dependencies ordered the stages: each job started after the ones it waited for had ended
    for before, after in (("train-round1", "encode-corpus-round1"), ("search-round1", "reduce-round1"),
                          ("build-hn", "train-round2"), ("search-round2", "reduce-round2")):
        assert _times(jobs[before])[1] <= _times(jobs[after])[0]
    # same data, settings, seeds and threads (OMP_NUM_THREADS=1): byte for byte the bash scripts' runs
    for rnd in ("round1", "round2"):
        if (out / rnd / "test.run").read_bytes() != (bash_out / rnd / "test.run").read_bytes():
            assert_same_run(read_run(out / rnd / "test.run"), read_run(bash_out / rnd / "test.run"))
            pytest.fail(f"{rnd}: the SLURM and bash runs differ, though only within float tolerance and ties")
    assert (out / "round1" / "train.hn.jsonl").read_bytes() == (bash_out / "round1" / "train.hn.jsonl").read_bytes()


def test_failed_stage_cancels_its_dependents(slurm_cluster, tmp_path, slice_data, slice_zip, tiny_bert_dir):
    out = tmp_path / "out"
    env = pipeline_env(str(tmp_path / "no-such-model"), slice_data, out, SOURCE=str(slice_zip),
                       DATASET="beir/scifact-slice")
    jobs = submit(env)
    wait_for(jobs.values())
    states = {name: job_states(i) for name, i in jobs.items()}
    assert states["get_data"] == ["COMPLETED"] and states["train-round1"] == ["FAILED"]
    for name, st in states.items():
        if name not in ("get_data", "train-round1"):
            assert st and set(st) == {"CANCELLED"}, (name, st)
    log = next((out / "slurm").glob("densir-train-round1_*.out")).read_text()
    assert "step 'train-round1' failed" in log and "no-such-model" in log
    assert not (out / "round1" / "enc").exists()


def _times(job_id: str) -> tuple:
    """(earliest StartTime, latest EndTime) over a job's tasks, as comparable strings."""
    return min(job_field(job_id, "StartTime")), max(job_field(job_id, "EndTime"))
