"""Fast checks of the stage scripts' command lines and of slurm/submit_pipeline.sh's job graph,
with a fake sbatch that records what it is given (no cluster, no model, seconds)."""
from __future__ import annotations

import json
import shlex

import pytest
from conftest import REPO, run_cmd

SCRIPTS = ("run.sh", "mine_hard_neg.sh", "train_hn.sh", "demo.sh", "slurm/submit_pipeline.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_settings(script):
    out = run_cmd(["bash", script, "--help"]).stdout
    assert "Usage" in out or "demo.sh" in out
    if script != "demo.sh":
        for var in ("MODEL", "DATA_DIR", "OUT_DIR", "NUM_SHARDS", "PRECISION", "NPROC"):
            assert var in out


@pytest.mark.parametrize("script", ("run.sh", "mine_hard_neg.sh", "train_hn.sh"))
def test_bad_option_and_missing_data_fail_clearly(script, tmp_path):
    proc = run_cmd(["bash", script, "--no_such_setting", "1"], check=False)
    assert proc.returncode == 2 and "unknown option --no_such_setting" in proc.stderr
    proc = run_cmd(["bash", script, "--data_dir", str(tmp_path / "nothing")], check=False)
    assert proc.returncode == 1 and "run get_data.sh first" in proc.stderr


FAKE_SBATCH = """#!/bin/bash
# records its arguments as one JSON line, prints a new job id (--parsable)
n=$(( $(wc -l < "$LOG" 2>/dev/null || echo 0) + 101 ))
python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$LOG"
echo "$n"
"""


def test_submit_pipeline_job_graph(tmp_path):
    fake = tmp_path / "sbatch"
    fake.write_text(FAKE_SBATCH)
    fake.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {"SBATCH": str(fake), "LOG": str(log), "DATA_DIR": str(tmp_path / "data"), "OUT_DIR": str(tmp_path / "out"),
           "NUM_SHARDS": "4", "MODEL": "bert-base-uncased"}
    out = run_cmd(["bash", "slurm/submit_pipeline.sh", "--partition", "gpu", "--account", "proj", "--gpus_per_node", "4",
                   "--nodes", "2", "--time", "2:00:00", "--train_time", "12:00:00", "--mem", "64G",
                   "--dataset", "beir/scifact"], env=env).stdout
    jobs = dict(line.split() for line in out.splitlines())
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == len(jobs) == 14
    by_name = {}
    for call in calls:
        name = call[call.index("--job-name") + 1].removeprefix("densir-")
        by_name[name] = call
    ids = {name: str(101 + i) for i, name in enumerate(by_name)}
    assert ids == jobs

    def deps(name):
        c = by_name[name]
        return set(c[c.index("--dependency") + 1].removeprefix("afterok:").split(":")) if "--dependency" in c else set()

    assert deps("get_data") == set()
    assert deps("train-round1") == {ids["get_data"]}
    assert deps("search-round1") == {ids["encode-corpus-round1"], ids["encode-queries-round1"]}
    assert deps("search-mine") == {ids["encode-corpus-round1"], ids["encode-queries-mine"]}
    assert deps("train-round2") == {ids["build-hn"]}
    assert deps("reduce-round2") == {ids["search-round2"], ids["reduce-round1"]}
    for name, call in by_name.items():
        line = shlex.join(call)
        assert "--partition gpu" in line and "--account proj" in line and "--kill-on-invalid-dep=yes" in line
        assert ("--array=0-3" in call) == (name.startswith(("encode-corpus", "search")))
        if name.startswith("train"):
            assert "--nodes 2" in line and "--gpus-per-node 4" in line and "--time 12:00:00" in line
            assert call[-2:] == [str(REPO / "slurm/train.sbatch"), "run.sh" if name.endswith("1") else "train_hn.sh"]
        else:
            assert "--time 2:00:00" in line and "--mem 64G" in line
    assert by_name["search-mine"][-2:] == [str(REPO / "slurm/search.sbatch"), "mine_hard_neg.sh"]
    assert by_name["encode-corpus-round2"][-3:] == [str(REPO / "slurm/encode.sbatch"), "train_hn.sh", "corpus"]
    assert (tmp_path / "out" / "slurm" / "jobs.tsv").read_text().count("\n") == 14


def test_submit_pipeline_stops_when_sbatch_refuses(tmp_path):
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/bash\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = run_cmd(["bash", "slurm/submit_pipeline.sh", "--partition", "nope"], check=False,
                   env={"SBATCH": str(fake), "DATA_DIR": str(tmp_path / "d"), "OUT_DIR": str(tmp_path / "o")})
    assert proc.returncode == 1 and "sbatch of job 'get_data' failed" in proc.stderr and "invalid partition" in proc.stderr


def test_train_hn_teacher_and_distill_loss_checked(tmp_path):
    """train_hn.sh's distillation settings fail with one line before anything runs."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}")
    base = ["bash", "train_hn.sh", "--data_dir", str(data), "--out_dir", str(tmp_path / "out"), "--precision", "fp32"]
    proc = run_cmd(base + ["--distill_loss", "mse"], check=False)
    assert proc.returncode == 1 and "DISTILL_LOSS must be kl or margin_mse, not 'mse'" in proc.stderr
    # one line, before anything ran
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
    proc = run_cmd(base + ["--teacher", str(tmp_path / "no-model")], check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_score_groups_step_takes_a_scored_run_as_teacher(tmp_path):
    """scripts/lib.sh's score_groups_step: a file TEACHER is a scored run (TEACHER_MISSING passed on), a step
    that a rerun skips."""
    groups, run, out = tmp_path / "g.jsonl", tmp_path / "t.run", tmp_path / "teacher" / "g.scored.jsonl"
    groups.write_text(json.dumps({"query_id": "q1", "query": "what is a cat",
                                  "positive_passages": [{"docid": "p1", "text": "a cat is an animal"}],
                                  "negative_passages": [{"docid": "n1", "text": "dogs bark"},
                                                        {"docid": "n2", "text": "the sky"}]}) + "\n")
    run.write_text("q1 Q0 p1 1 3.500000 t\nq1 Q0 n1 2 -1.250000 t\n")
    script = 'DENSIR_HOME=$PWD; DENSIR_SCRIPT=test; source scripts/lib.sh; score_groups_step "$@"'
    cmd = ["bash", "-c", script, "step", str(run), str(groups), str(out)]
    proc = run_cmd(cmd, check=False)
    assert proc.returncode == 1 and "'n2' of query 'q1' has no score" in proc.stderr and not out.exists()
    proc = run_cmd(cmd, env={"TEACHER_MISSING": "drop"})
    g = json.loads(out.read_text())
    assert [(p["docid"], p["score"]) for p in g["positive_passages"] + g["negative_passages"]] == \
        [("p1", 3.5), ("n1", -1.25)]
    assert "skip score-g" in run_cmd(cmd).stderr
