"""tools/holdout_split.py on real SciFact: a seeded tuning split of the TRAIN queries that the
stage scripts read like any get_data.sh directory, disjoint from what is left to train on."""
import json

import pytest
from conftest import run_cmd

from densir.formats import iter_train_groups, read_qrels, read_queries
from densir.io import read_run

pytestmark = pytest.mark.slow


def test_holdout_split_of_scifact_train(scifact_data, tmp_path):
    out = tmp_path / "ho"
    run_cmd(["python", "tools/holdout_split.py", "--data_dir", str(scifact_data), "--out_dir", str(out),
             "--n", "100", "--seed", "0"])
    train, held = read_queries(out / "queries.train.jsonl"), read_queries(out / "queries.heldout.jsonl")
    everything = read_queries(scifact_data / "queries.train.jsonl")
    assert len(held) == 100 and not set(train) & set(held) and set(train) | set(held) == set(everything)
    assert set(read_qrels(out / "qrels.heldout.tsv")) == set(held)
    assert set(read_qrels(out / "qrels.train.tsv")) <= set(train)
    assert set(read_run(out / "bm25.heldout.run")) == set(held)
    group_qids = {g["query_id"] for _, g in iter_train_groups(out / "train.bm25.jsonl")}
    assert group_qids and not group_qids & set(held)
    # the test split is not touched: no test file in the tuning directory
    assert not list(out.glob("*test*"))
    metrics = json.loads((out / "bm25.heldout.metrics.json").read_text())
    assert metrics["queries"] == 100 and 0.5 < metrics["nDCG@10"] < 0.9
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["heldout_of"]["n"] == 100 and manifest["heldout_of"]["train_queries"] == len(train)
    assert (out / "corpus.jsonl").resolve() == (scifact_data / "corpus.jsonl").resolve()
    # seeded: the same sample again; another seed, another sample
    run_cmd(["python", "tools/holdout_split.py", "--data_dir", str(scifact_data), "--out_dir", str(tmp_path / "again"),
             "--n", "100", "--seed", "0"])
    assert (tmp_path / "again" / "queries.heldout.jsonl").read_bytes() == (out / "queries.heldout.jsonl").read_bytes()
    run_cmd(["python", "tools/holdout_split.py", "--data_dir", str(scifact_data), "--out_dir", str(tmp_path / "other"),
             "--n", "100", "--seed", "1"])
    assert set(read_queries(tmp_path / "other" / "queries.heldout.jsonl")) != set(held)
    bad = run_cmd(["python", "tools/holdout_split.py", "--data_dir", str(scifact_data), "--out_dir",
                   str(tmp_path / "bad"), "--n", "5000"], check=False)
    assert bad.returncode != 0 and "cannot hold out 5000" in bad.stderr
