"""get_data.sh on the real data in ../shared/data: counts, the BM25 regression figures, groups,
non-integer ids end to end, malformed input, and resume after a failed step."""
import json
import zipfile

import pytest
from conftest import MSMARCO_TGZ, REPO, run_cmd

from densir.formats import iter_train_groups, read_corpus, read_qrels, read_queries
from densir.io import read_run

pytestmark = pytest.mark.slow


def test_scifact_counts(scifact_data, expected):
    want = expected["scifact_counts"]
    manifest = json.loads((scifact_data / "dataset.json").read_text())
    assert manifest["docs"] == want["docs"]
    assert len(read_corpus(scifact_data / "corpus.jsonl")) == want["docs"]
    for split in ("train", "test"):
        assert len(read_queries(scifact_data / f"queries.{split}.jsonl")) == want[f"{split}_queries"]
        assert sum(len(d) for d in read_qrels(scifact_data / f"qrels.{split}.tsv").values()) == want[f"{split}_qrels"]


def test_scifact_bm25_matches_pyserini_regression(scifact_data, expected):
    """Pyserini's published BEIR (flat) BM25 figures for SciFact test: nDCG@10 0.6789, R@100 0.9253."""
    want = expected["scifact_bm25_flat"]
    m = json.loads((scifact_data / "bm25.test.metrics.json").read_text())
    assert m["nDCG@10"] == pytest.approx(want["nDCG@10"], abs=want["tolerance"])
    assert m["Recall@100"] == pytest.approx(want["Recall@100"], abs=want["tolerance"])
    run = read_run(scifact_data / "bm25.test.run")
    assert len(run) == 300 and all(len(h) <= 1000 for h in run.values())


def test_scifact_train_groups(scifact_data):
    qrels = read_qrels(scifact_data / "qrels.train.tsv")
    groups = [g for _, g in iter_train_groups(scifact_data / "train.bm25.jsonl")]
    stats = json.loads((scifact_data / "train.bm25.stats.json").read_text())
    assert len(groups) == stats["groups"] == 809 - stats["no_positive"] - stats["no_negative"] - stats["not_in_run"]
    bm25 = read_run(scifact_data / "bm25.train.run")
    for g in groups:
        pos = {d for d, r in qrels[g["query_id"]].items() if r > 0}
        assert {p["docid"] for p in g["positive_passages"]} == pos
        negs = [p["docid"] for p in g["negative_passages"]]
        assert not pos & set(negs) and len(set(negs)) == len(negs) and 0 < len(negs) <= 30
        assert set(negs) <= {d for d, _ in bm25[g["query_id"]][:200]}


def test_msmarco_mini_keeps_pids(tmp_path, shared_data):
    out = tmp_path / "msmarco"
    run_cmd(["bash", "get_data.sh", "--dataset", "msmarco-passage", "--source", str(MSMARCO_TGZ),
             "--out_dir", str(out), "--threads", "2"])
    pids = [line.split("\t", 1)[0] for line in (MSMARCO_TGZ.parent / "collection.tsv").read_text().splitlines()]
    corpus = read_corpus(out / "corpus.jsonl")
    assert list(corpus) == pids and all(isinstance(d, str) for d in corpus)
    qrels = read_qrels(out / "qrels.train.tsv")
    groups = [g for _, g in iter_train_groups(out / "train.bm25.jsonl")]
    assert groups
    for g in groups:
        pos = set(qrels[g["query_id"]])
        assert not pos & {p["docid"] for p in g["negative_passages"]}
    m = json.loads((out / "bm25.dev.metrics.json").read_text())
    assert 0 < m["nDCG@10"] <= 1 and m["queries"] == 20


def _beir_zip(path, corpus, queries, qrels_train, qrels_test):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("toy/corpus.jsonl", "".join(json.dumps(d) + "\n" for d in corpus))
        z.writestr("toy/queries.jsonl", "".join(json.dumps(q) + "\n" for q in queries))
        z.writestr("toy/qrels/train.tsv", "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels_train))
        z.writestr("toy/qrels/test.tsv", "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels_test))
    return path


TOY_CORPUS = [{"_id": f"doc-{c}", "title": f"{w} title", "text": f"all about {w} and more {w}"}
              for c, w in zip("αβγδεζηθ", ["cats", "dogs", "fish", "birds", "trees", "rocks", "rivers", "stars"])]
TOY_QUERIES = [{"_id": "q-α", "text": "cats more"}, {"_id": "q-β", "text": "dogs birds"}, {"_id": "q-γ", "text": "rivers"},
               {"_id": "q-δ", "text": "zebra"}]


def test_non_integer_ids_end_to_end(tmp_path):
    src = _beir_zip(tmp_path / "toy.zip", TOY_CORPUS, TOY_QUERIES,
                    [("q-α", "doc-α"), ("q-β", "doc-β"), ("q-δ", "doc-δ")], [("q-γ", "doc-η")])
    out = tmp_path / "out"
    run_cmd(["bash", "get_data.sh", "--dataset", "beir/toy", "--source", str(src), "--out_dir", str(out),
             "--threads", "1", "--n_sample", "2"])
    groups = {g["query_id"]: g for _, g in iter_train_groups(out / "train.bm25.jsonl")}
    assert set(groups) == {"q-α", "q-β"}
    stats = json.loads((out / "train.bm25.stats.json").read_text())
    assert stats["not_in_run"] == 1 and stats["groups"] == 2  # "zebra" has no BM25 hit: counted, not lost
    assert groups["q-α"]["positive_passages"][0]["docid"] == "doc-α"
    assert all(p["docid"].startswith("doc-") and p["docid"] != "doc-α" for p in groups["q-α"]["negative_passages"])
    assert read_run(out / "bm25.test.run")["q-γ"][0][0] == "doc-η"
    assert json.loads((out / "bm25.test.metrics.json").read_text())["MRR@10"] == 1.0


def test_malformed_source_fails_with_file_and_line(tmp_path):
    src = _beir_zip(tmp_path / "bad.zip", TOY_CORPUS, TOY_QUERIES, [("q-α", "doc-α"), ("q-β", "doc-nope")], [("q-γ", "doc-η")])
    out = tmp_path / "out"
    proc = run_cmd(["bash", "get_data.sh", "--dataset", "beir/bad", "--source", str(src), "--out_dir", str(out)],
                   check=False)
    assert proc.returncode != 0
    assert "bad.zip:toy/qrels/train.tsv:3: field 'docid': docid 'doc-nope' is not in the corpus" in proc.stderr
    assert "step 'convert' failed" in proc.stderr
    assert not (out / "dataset.json").exists()


def test_failed_step_leaves_nothing_complete_and_rerun_resumes(tmp_path):
    src = _beir_zip(tmp_path / "toy.zip", TOY_CORPUS, TOY_QUERIES, [("q-α", "doc-α")], [("q-γ", "doc-η")])
    out = tmp_path / "out"
    # a python that dies (SIGKILL, as a crash or a scheduler kill would) in the middle of build_train
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/bash\ncase \"$*\" in *build_train.py*) kill -9 $$ ;; esac\nexec {REPO}/.venv/bin/python \"$@\"\n"
                    if (REPO / ".venv/bin/python").exists() else
                    "#!/bin/bash\ncase \"$*\" in *build_train.py*) kill -9 $$ ;; esac\nexec python \"$@\"\n")
    fake.chmod(0o755)
    args = ["bash", "get_data.sh", "--dataset", "beir/toy", "--source", str(src), "--out_dir", str(out), "--threads", "1"]
    proc = run_cmd(args, env={"PYTHON": str(fake)}, check=False)
    assert proc.returncode != 0 and "step 'build-train' failed" in proc.stderr
    assert (out / "bm25.train.run").exists() and not (out / "train.bm25.jsonl").exists()
    proc = run_cmd(args)
    assert "skip bm25-search-train" in proc.stderr and "step build-train" in proc.stderr
    assert (out / "train.bm25.jsonl").exists()
