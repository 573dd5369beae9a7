"""rerank.sh on real SciFact data: it re-ranks the round-2 run of the stage scripts
(tests/test_pipeline.py's slice), as a bash stage and as SLURM jobs. (The trainer's losses on real
SciFact groups: tests/test_reranker_training_scifact.py.)"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, RERANK_SETTINGS, SBIN_PATH, assert_same_run, copy_pipeline, job_states, run_cmd, wait_for


# --------------------------------------------------------------------------- the stage script
@pytest.mark.slow
def test_rerank_sh_on_the_round2_run(rerank_pipeline, slice_data):
    from densir.formats import read_queries
    from densir.io import read_run

    out, env, proc = rerank_pipeline
    d = out / "rerank"
    assert (d / "model" / "densir_reranker.json").exists()
    groups_logged = proc.stderr
    assert "train.bm25.jsonl" in groups_logged and "train.hn.jsonl" in groups_logged  # round 2's groups
    before, ce, after = (read_run(p) for p in (out / "round2" / "test.run", d / "test.ce.run", d / "test.run"))
    assert list(after) == list(ce) == list(before) and set(after) == set(read_queries(slice_data / "queries.test.jsonl"))
    for qid, hits in after.items():
        top = before[qid][:10]
        assert sorted(doc for doc, _ in hits) == sorted(doc for doc, _ in ce[qid]) == sorted(doc for doc, _ in top)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        # the fused score is 0.3 * z(round-2 score) + 0.7 * z(cross-encoder score) over the top 10
        z = lambda xs: (np.array(xs) - np.mean(xs)) / (np.std(xs) or 1.0)  # noqa: E731
        docs = [doc for doc, _ in top]
        first, cross = dict(top), dict(ce[qid])
        want = dict(zip(docs, 0.3 * z([first[x] for x in docs]) + 0.7 * z([cross[x] for x in docs])))
        # the runs hold 6 decimals: compare within what that rounding allows
        assert all(abs(s - want[doc]) < 1e-4 for doc, s in hits), qid
    metrics = json.loads((d / "test.metrics.json").read_text())
    assert metrics["queries_in_run"] == metrics["queries"]
    assert json.loads((d / "test.ce.metrics.json").read_text())["queries_in_run"] == metrics["queries"]
    table = (out / "test.table.txt").read_text()
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["BM25", "round1", "round2", "rerank-ce", "rerank"]
    assert "rerank" in proc.stdout and "round2" in proc.stdout
    again = run_cmd(["bash", "rerank.sh"], env=env, timeout=300)  # everything complete: all skipped
    assert "step " not in again.stderr.replace("skip ", "") and again.stderr.count("skip ") >= 5


@pytest.mark.slow
def test_rerank_sh_names_a_missing_input(tmp_path, slice_data, tiny_bert_dir):
    env = {"DATA_DIR": str(slice_data), "OUT_DIR": str(tmp_path), "RERANK_MODEL": tiny_bert_dir, "STAGE": "train"}
    proc = run_cmd(["bash", "rerank.sh"], env=env, check=False)
    assert proc.returncode == 1 and "train.hn.jsonl are missing (run mine_hard_neg.sh first" in proc.stderr
    proc = run_cmd(["bash", "rerank.sh", "--stage", "rerank"], env=env, check=False)
    assert proc.returncode == 1 and "no run to re-rank at" in proc.stderr


def test_rerank_sh_takes_every_loss_of_the_trainer(tmp_path, slice_data, tiny_bert_dir):
    """RERANK_LOSS takes each of densir.losses.LOSSES (the run goes on to the missing groups)
    and names them all when given another."""
    from densir.losses import LOSSES

    env = {"DATA_DIR": str(slice_data), "OUT_DIR": str(tmp_path), "RERANK_MODEL": tiny_bert_dir, "STAGE": "train"}
    for loss in LOSSES:
        proc = run_cmd(["bash", "rerank.sh"], env=dict(env, RERANK_LOSS=loss), check=False)
        assert proc.returncode == 1 and "train.hn.jsonl are missing" in proc.stderr, loss
    proc = run_cmd(["bash", "rerank.sh"], env=dict(env, RERANK_LOSS="hinge"), check=False)
    assert proc.returncode == 1 and "not 'hinge'" in proc.stderr and all(loss in proc.stderr for loss in LOSSES)


@pytest.mark.slow
def test_rerank_sbatch_train_array_merge(slurm_cluster, bash_pipeline, rerank_pipeline, tiny_bert_dir, tmp_path):
    """train -> query-shard array -> merge as SLURM jobs chained by afterok (on a copy of the stage
    scripts' outputs); the bash stage's run."""
    out, env = copy_pipeline(bash_pipeline, tmp_path / "out")
    env = dict(env, RERANK_MODEL=tiny_bert_dir, RERANK_ROUND="rerank-slurm", **RERANK_SETTINGS)
    # the venv's python first (jobs run `python -m densir...`), then sbatch/scontrol
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}:{SBIN_PATH}"
    logs = out / "rerank-slurm-logs"
    logs.mkdir(exist_ok=True)

    def sbatch(*args):
        proc = run_cmd(["sbatch", "--parsable", "--kill-on-invalid-dep=yes", "--chdir", str(REPO),
                        "--output", str(logs / "%x_%A_%a.out"), *args], env=env)
        return proc.stdout.strip().split(";")[0]

    t = sbatch("slurm/rerank.sbatch", "train")
    a = sbatch("--dependency", f"afterok:{t}", "--array=0-1", "slurm/rerank.sbatch", "rerank")
    m = sbatch("--dependency", f"afterok:{a}", "slurm/rerank.sbatch", "merge")
    wait_for([t, a, m])
    states = {j: job_states(j) for j in (t, a, m)}
    assert states == {t: ["COMPLETED"], a: ["COMPLETED"] * 2, m: ["COMPLETED"]}, (
        states, {p.name: p.read_text()[-3000:] for p in logs.glob("*.out")})
    d = out / "rerank-slurm"
    assert (d / "test.ce.run.qshard-0-of-2").exists() and (d / "test.ce.run.qshard-1-of-2").exists()
    assert (d / "test.metrics.json").exists()
    # same groups, settings and seed as the bash stage: the same run
    from densir.io import read_run

    assert_same_run(read_run(d / "test.run"), read_run(rerank_pipeline[0] / "rerank" / "test.run"))
