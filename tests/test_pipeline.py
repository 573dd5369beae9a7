"""The stage scripts end to end on a real slice of SciFact: get_data.sh, run.sh, mine_hard_neg.sh,
train_hn.sh; every artefact and metric file checked, mined negatives checked against the qrels,
a rerun that skips everything, a failing step named, and NPROC=2 training through torchrun.

The slice: every test query (and its positives), 200 train queries (and theirs), 1,000 other
documents; a tiny random BERT trained for a few steps, so the numbers are not meaningful, the
artefacts are. tests/test_slurm.py runs the same slice and settings as SLURM jobs.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_pipeline, run_cmd

from densir.formats import iter_train_groups, read_corpus, read_qrels, read_queries
from densir.io import read_run

pytestmark = pytest.mark.slow

N_TRAIN_QUERIES, N_OTHER_DOCS = 200, 1000
# small settings shared by the bash and the SLURM runs (env vars of the scripts)
SETTINGS = {
    "NUM_SHARDS": "2", "PRECISION": "fp32", "Q_MAX_LEN": "16", "P_MAX_LEN": "64", "BATCH": "4",
    "TRAIN_N_PASSAGES": "4", "LR": "1e-4", "MAX_STEPS": "12", "SAVE_STEPS": "6", "TEMPERATURE": "0.5",
    "SEED": "42", "ENCODE_BATCH": "64", "EVAL_DEPTH": "100", "DEPTH": "50", "SKIP": "3", "N_SAMPLE": "8",
    "HN_MAX_STEPS": "8", "OMP_NUM_THREADS": "1",
}
METRICS = ("MRR@10", "nDCG@10", "Recall@100", "Recall@1000")


def build_slice_zip(shared_data: Path, out: Path, seed: int = 0) -> Path:
    """A BEIR-layout zip: all test queries, N_TRAIN_QUERIES train queries, their positives + N_OTHER_DOCS docs."""
    src = shared_data / "scifact"
    qrels = {split: [line.rstrip("\n").split("\t") for line in (src / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]]
             for split in ("train", "test")}
    rng = random.Random(seed)
    train_q = sorted(rng.sample(sorted({q for q, _, _ in qrels["train"]}), N_TRAIN_QUERIES))
    qrels["train"] = [r for r in qrels["train"] if r[0] in set(train_q)]
    keep_q = set(train_q) | {q for q, _, _ in qrels["test"]}
    positives = {d for split in qrels.values() for _, d, _ in split}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines() if line.strip()]
    others = sorted(rng.sample(sorted(d["_id"] for d in corpus if d["_id"] not in positives), N_OTHER_DOCS))
    keep_d = positives | set(others)
    queries = [line for line in (src / "queries.jsonl").read_text().splitlines() if line.strip()
               and json.loads(line)["_id"] in keep_q]
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("scifact-slice/corpus.jsonl", "".join(json.dumps(d) + "\n" for d in corpus if d["_id"] in keep_d))
        z.writestr("scifact-slice/queries.jsonl", "\n".join(queries) + "\n")
        for split, rows in qrels.items():
            z.writestr(f"scifact-slice/qrels/{split}.tsv",
                       "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows))
    return out


def pipeline_env(model: str, data_dir: Path, out_dir: Path, **extra) -> dict:
    return dict(SETTINGS, MODEL=model, DATA_DIR=str(data_dir), OUT_DIR=str(out_dir), **extra)


def run_stage_scripts(env: dict) -> list:
    return [run_cmd(["bash", script], env=env, timeout=900) for script in ("run.sh", "mine_hard_neg.sh", "train_hn.sh")]


# --------------------------------------------------------------------------- checks
def check_shards(enc: Path, corpus_ids: list, num_shards: int) -> None:
    """Corpus shards cover the corpus exactly once, round-robin (record g -> shard g % n)."""
    seen = []
    for i in range(num_shards):
        meta = json.loads((enc / f"corpus.{i}.json").read_text())
        ids = (enc / f"corpus.{i}.ids").read_text().splitlines()
        vecs = np.load(enc / f"corpus.{i}.npy", mmap_mode="r")
        assert meta["count"] == len(ids) == vecs.shape[0] and vecs.shape[1] == meta["dim"]
        assert ids == corpus_ids[i::num_shards]
        assert np.isfinite(vecs).all()
        seen += ids
    assert sorted(seen) == sorted(corpus_ids)


def check_run(path: Path, qids: set, doc_ids: set, depth: int) -> dict:
    run = read_run(path)
    assert set(run) == qids
    for hits in run.values():
        assert 0 < len(hits) <= depth and {d for d, _ in hits} <= doc_ids and len({d for d, _ in hits}) == len(hits)
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)
    ranks = [int(line.split()[3]) for line in path.read_text().splitlines()]
    assert ranks[0] == 1
    return run


def check_round(out: Path, rnd: str, data: Path, num_shards: int, depth: int) -> None:
    corpus_ids = list(read_corpus(data / "corpus.jsonl"))
    test_q = set(read_queries(data / "queries.test.jsonl"))
    d = out / rnd
    check_shards(d / "enc", corpus_ids, num_shards)
    qmeta = json.loads((d / "enc" / "queries.test.json").read_text())
    assert qmeta["count"] == len(test_q) and qmeta["kind"] == "query"
    for i in range(num_shards):
        shard_docs = set((d / "enc" / f"corpus.{i}.ids").read_text().splitlines())
        check_run(d / "runs" / f"test.{i}.run", test_q, shard_docs, depth)
    run = check_run(d / "test.run", test_q, set(corpus_ids), depth)
    marco = [line.split("\t") for line in (d / "test.marco.tsv").read_text().splitlines()]
    assert len(marco) == sum(len(h) for h in run.values())
    assert all(len(r) == 3 and int(r[2]) >= 1 for r in marco)
    assert [(q, doc) for q, doc, _ in marco] == [(q, doc) for q, hits in run.items() for doc, _ in hits]
    m = json.loads((d / "test.metrics.json").read_text())
    assert all(0.0 <= m[k] <= 1.0 for k in METRICS) and m["queries"] == len(test_q) == m["queries_in_run"]


# --------------------------------------------------------------------------- tests
def test_stage_scripts_end_to_end(bash_pipeline, slice_data):
    out, env, (r1, mine, r2) = bash_pipeline
    n = int(env["NUM_SHARDS"])
    for rnd in ("zeroshot", "round1", "round2"):
        check_round(out, rnd, slice_data, n, int(env["EVAL_DEPTH"]))
    for rnd in ("round1", "round2"):
        model = out / rnd / "model"
        assert (model / "densir_config.json").exists() and (model / "model.safetensors").exists()
        assert (model / "modules.json").exists()  # loads in sentence-transformers too
    # round 1 checkpointed (SAVE_STEPS=6 of MAX_STEPS=12), so a killed run resumes
    assert list((out / "round1" / "model").glob("checkpoint-*"))
    # the tables: BM25 + zero-shot + round 1, then + round 2
    assert re.search(r"^BM25 .*\n(.*\n)*round1 ", r1.stdout, re.M) and "zeroshot" in r1.stdout
    table = (out / "test.table.txt").read_text()
    for name in ("BM25", "zeroshot", "round1", "round2"):
        assert re.search(rf"^{name}(\s+[01]\.\d{{4}}){{4}}$", table, re.M), table
    # round 2 trained on the BM25 groups and the mined groups together, from the initial model
    launch = [line for line in r2.stderr.splitlines() if "densir.driver.train" in line]
    assert launch and str(slice_data / "train.bm25.jsonl") in launch[0] and str(out / "round1" / "train.hn.jsonl") in launch[0]
    assert f"--model_name_or_path {env['MODEL']} " in launch[0] and "--max_steps 8" in launch[0]
    timings = [line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()]
    assert {"run", "mine_hard_neg", "train_hn"} <= {t[0] for t in timings}


def test_mined_negatives_are_retrieved_non_positives(bash_pipeline, slice_data):
    out, env, _ = bash_pipeline
    depth, skip, n_sample = int(env["DEPTH"]), int(env["SKIP"]), int(env["N_SAMPLE"])
    qrels = read_qrels(slice_data / "qrels.train.tsv")
    train_q = set(read_queries(slice_data / "queries.train.jsonl"))
    run = check_run(out / "round1" / "train.run", train_q, set(read_corpus(slice_data / "corpus.jsonl")), depth)
    groups = [g for _, g in iter_train_groups(out / "round1" / "train.hn.jsonl")]
    stats = json.loads((out / "round1" / "train.hn.stats.json").read_text())
    assert len(groups) == stats["groups"] > 0.9 * len(train_q)
    bm25_negs = {g["query_id"]: {p["docid"] for p in g["negative_passages"]}
                 for _, g in iter_train_groups(slice_data / "train.bm25.jsonl")}
    differs = 0
    for g in groups:
        pos = {d for d, r in qrels[g["query_id"]].items() if r > 0}
        negs = [p["docid"] for p in g["negative_passages"]]
        assert {p["docid"] for p in g["positive_passages"]} == pos
        assert negs and len(negs) <= n_sample and len(set(negs)) == len(negs)
        assert not pos & set(negs)  # mined negatives are never positives
        ranked = [d for d, _ in run[g["query_id"]]]
        assert set(negs) <= set(ranked[skip:depth])  # from the dense top-DEPTH, top SKIP left out
        differs += set(negs) != bm25_negs.get(g["query_id"])
    assert differs > 0.5 * len(groups)  # they are the dense model's, not BM25's


def test_rerun_skips_every_complete_step(bash_pipeline, tmp_path):
    # on a copy: a rerun appends to timings.tsv and rewrites the table, in its own OUT_DIR
    out, env = copy_pipeline(bash_pipeline, tmp_path / "out")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "timings.tsv"
              and not p.name.endswith(".table.txt")}
    for proc in run_stage_scripts(env):
        ran = [line for line in proc.stderr.splitlines() if "] step " in line]
        assert not ran, ran
        assert "skip " in proc.stderr
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after
    # shards of another NUM_SHARDS hold other documents: refused, not skipped
    proc = run_cmd(["bash", "run.sh", "--stage", "encode-corpus"], env=dict(env, NUM_SHARDS="3"), check=False)
    assert proc.returncode == 1 and "was encoded with another NUM_SHARDS than 3" in proc.stderr


def test_failed_step_is_named_and_rerun_resumes(tmp_path, slice_data, tiny_bert_dir):
    out = tmp_path / "out"
    env = pipeline_env(tiny_bert_dir, slice_data, out, MAX_STEPS="2", NUM_SHARDS="1")
    proc = run_cmd(["bash", "run.sh"], env=dict(env, MODEL=str(tmp_path / "no-such-model")), check=False)
    assert proc.returncode != 0 and "run.sh: step 'train-round1' failed" in proc.stderr
    assert not (out / "round1" / "model" / "densir_config.json").exists()
    proc = run_cmd(["bash", "run.sh", "--stage", "train"], env=env)
    assert (out / "round1" / "model" / "densir_config.json").exists()
    proc = run_cmd(["bash", "mine_hard_neg.sh", "--stage", "search"], env=env, check=False)
    # searching before the train queries are encoded names the step and the missing input
    assert proc.returncode != 0 and "mine_hard_neg.sh: step 'search-round1-train-0' failed" in proc.stderr
    assert not (out / "round1" / "runs" / "train.0.run").exists()
    bad = run_cmd(["bash", "run.sh", "--stage", "nope"], env=env, check=False)
    assert bad.returncode != 0 and "unknown STAGE 'nope'" in bad.stderr


def test_nproc2_trains_with_torchrun_and_cross_device_negatives(tmp_path, slice_data, tiny_bert_dir):
    out = tmp_path / "out"
    env = pipeline_env(tiny_bert_dir, slice_data, out, NPROC="2", MAX_STEPS="4", SAVE_STEPS="100", NUM_SHARDS="1")
    proc = run_cmd(["bash", "run.sh"], env=env, timeout=900)
    launch = [line for line in proc.stderr.splitlines() if "densir.driver.train" in line][0]
    assert "-m torch.distributed.run --standalone --nproc_per_node 2" in launch and "--negatives_x_device" in launch
    assert "--ddp_backend gloo" in launch
    assert proc.stdout.count("trained 4 steps") == 1  # one DDP job (rank 0 reports), not two lone ranks
    assert (out / "round1" / "model" / "densir_config.json").exists()
    m = json.loads((out / "round1" / "test.metrics.json").read_text())
    assert m["queries_in_run"] == m["queries"]


def test_demo_sh_runs_the_stages_and_checks_its_figures(tmp_path, slice_data, slice_zip, tiny_bert_dir):
    """demo.sh (what `make demo` runs) on the slice with the tiny model, DISTILL=1 and RERANK=1: the
    stages in order (the re-ranker trained once, before round 2, as its teacher), the teacher's scores
    on every passage of round 2's groups and round 2 trained with the distillation loss, the summary
    with one wall time per stage, the table; then its own check, which a tiny random BERT's figures
    must fail with a non-zero exit. On a copy of the slice's data: demo.sh holds HOLDOUT train
    queries out inside its DATA_DIR, and the session's slice stays as get_data.sh built it."""
    out, data = tmp_path / "demo", tmp_path / "data"
    shutil.copytree(slice_data, data, symlinks=True)
    env = pipeline_env(tiny_bert_dir, data, out, SOURCE=str(slice_zip), DATASET="beir/scifact-slice",
                       DEMO_CHECK="0", DISTILL="1", RERANK="1", THREADS="2", RERANK_MAX_STEPS="4", RERANK_BATCH="2",
                       RERANK_N_PASSAGES="4", RERANK_MAX_LEN="64", RERANK_DEPTH="10", RERANK_EVAL_BATCH="32")
    proc = run_cmd(["bash", "demo.sh"], env=env, timeout=1500)
    assert [m.group(1) for m in re.finditer(r"=== (\w+)", proc.stderr)] == \
        ["get_data", "run", "mine_hard_neg", "teacher", "train_hn", "rerank"]
    assert proc.stderr.count("step train-rerank ") == 1 and "skip train-rerank" in proc.stderr  # trained once
    for name, src in (("train.bm25", data / "train.bm25.jsonl"), ("train.hn", out / "round1" / "train.hn.jsonl")):
        scored = [g for _, g in iter_train_groups(out / "round2" / "teacher" / f"{name}.scored.jsonl")]
        plain = [g for _, g in iter_train_groups(src)]
        assert [g["query"] for g in scored] == [g["query"] for g in plain] and scored
        assert all(isinstance(p["score"], float) for g in scored for p in g["positive_passages"] + g["negative_passages"])
    launch = [line for line in proc.stderr.splitlines() if "densir.driver.train " in line and "round2" in line][0]
    assert "--distill_loss kl" in launch and "round2/teacher/train.hn.scored.jsonl" in launch
    summary = (out / "demo_summary.txt").read_text()
    walls = dict(re.findall(r"^(\w+) +(\d+)$", summary, flags=re.M))
    assert list(walls) == ["get_data", "run", "mine_hard_neg", "teacher", "train_hn", "rerank", "total"]
    assert int(walls["total"]) == sum(int(v) for k, v in walls.items() if k != "total")
    table = (out / "test.table.txt").read_text()
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["BM25", "round1", "round2", "rerank-ce", "rerank"]
    assert table.strip() in summary
    saved = json.loads((out / "demo_summary.json").read_text())  # what the README's demo tables render
    assert saved["stage_seconds"] == {k: int(v) for k, v in walls.items() if k != "total"}
    assert saved["systems"]["round2"] == json.loads((out / "round2" / "test.metrics.json").read_text())
    assert {"bm25", "round1", "round2", "rerank-ce", "rerank"} <= set(saved["systems"])
    scripts = {line.split("\t")[0] for line in (out / "timings.tsv").read_text().splitlines()}
    assert {"run", "mine_hard_neg", "train_hn", "rerank"} <= scripts
    n = {r: json.loads((out / r / "test.metrics.json").read_text())["nDCG@10"] for r in ("round1", "round2", "rerank")}
    passes = n["round2"] > n["round1"] > 0.645 and n["rerank"] > n["round2"]
    assert not passes  # a tiny random BERT after 12 steps
    again = run_cmd(["bash", "demo.sh"], env=dict(env, DEMO_CHECK="1"), check=False, timeout=600)
    assert again.returncode == 1 and "> zero-shot 0.645: NO" in again.stdout
    assert "step " not in again.stderr.replace("skip ", "")  # everything was complete


def test_backend_onnx_int8_through_the_stage_scripts(tmp_path, bash_pipeline, slice_data, tiny_bert_dir):
    """BACKEND=onnx QUANTIZE=int8: run.sh encodes round 1 (the trained model, copied) with ONNX Runtime
    int8, the shards say so, search and reduce give a full run; a bad BACKEND is one clear line."""
    pytest.importorskip("onnxruntime")
    done, _, _ = bash_pipeline
    out = tmp_path / "out"
    shutil.copytree(done / "round1" / "model", out / "round1" / "model")
    env = pipeline_env(tiny_bert_dir, slice_data, out, BACKEND="onnx", QUANTIZE="int8")
    for stage in ("encode-corpus", "encode-queries", "search", "reduce"):
        run_cmd(["bash", "run.sh", "--stage", stage], env=env)
    metas = [json.loads(p.read_text()) for p in sorted((out / "round1" / "enc").glob("*.json"))]
    assert len(metas) == 3 and {(m["backend"], m["quantize"], m["backend_recipe"]) for m in metas} == \
        {("onnx", "int8", "ort-int8-dynamic-keep-ffn-out")}
    run = read_run(out / "round1" / "test.run")
    assert len(run) == len(read_queries(slice_data / "queries.test.jsonl"))
    bad = run_cmd(["bash", "run.sh", "--stage", "encode-corpus"], env=dict(env, BACKEND="tensorrt"), check=False)
    assert bad.returncode != 0 and "BACKEND must be torch, onnx or openvino, not 'tensorrt'" in bad.stderr
