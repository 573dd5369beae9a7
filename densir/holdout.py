"""Hold out some train queries as a tuning split, so settings are never chosen on the test split.

:func:`split_heldout` turns a get_data.sh directory ``SRC`` into a new one ``DST`` that the stage
scripts read like any other (``DATA_DIR=DST EVAL_SPLIT=heldout bash run.sh``)::

    queries.train.jsonl qrels.train.tsv bm25.train.run train.bm25.jsonl   the train split minus N queries
    queries.heldout.jsonl qrels.heldout.tsv bm25.heldout.run              those N queries (qrels must be positive)
    bm25.heldout.metrics.json                                             BM25 on them (from the train BM25 run)
    corpus.jsonl bm25_index                                               symlinks to SRC's
    dataset.json                                                          SRC's, plus "heldout_of"; written last

The held-out queries are a seeded random sample of the train queries that have a positive.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

from densir.evaluation import evaluate
from densir.formats import read_qrels
from densir.io import atomic_write, iter_jsonl, read_json, read_run, write_json


def split_heldout(src, dst, n: int, seed: int = 0, split: str = "train") -> dict:
    """Write DST from SRC with ``n`` of SRC's ``split`` queries held out; return DST's manifest."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    qrels = read_qrels(src / f"qrels.{split}.tsv")
    candidates = sorted(q for q, docs in qrels.items() if any(r > 0 for r in docs.values()))
    if n >= len(candidates):
        raise ValueError(f"cannot hold out {n} of {len(candidates)} {split} queries with a positive")
    heldout = set(random.Random(seed).sample(candidates, n))

    def keep(qid, part):  # part: "train" keeps the rest, "heldout" keeps the sample
        return (qid in heldout) == (part == "heldout")

    kept = {}
    for part in ("train", "heldout"):
        kept[part] = _filter_jsonl(src / f"queries.{split}.jsonl", dst / f"queries.{part}.jsonl", "query_id",
                                   lambda q: keep(q, part))
        _filter_lines(src / f"qrels.{split}.tsv", dst / f"qrels.{part}.tsv", lambda q: keep(q, part))
        _filter_lines(src / f"bm25.{split}.run", dst / f"bm25.{part}.run", lambda q: keep(q, part))
    n_groups = _filter_jsonl(src / "train.bm25.jsonl", dst / "train.bm25.jsonl", "query_id", lambda q: q not in heldout)
    scores = evaluate(read_qrels(dst / "qrels.heldout.tsv"), read_run(dst / "bm25.heldout.run"))
    write_json(dst / "bm25.heldout.metrics.json", dict(scores, run=str(dst / "bm25.heldout.run")))
    for name in ("corpus.jsonl", "bm25_index"):
        link = dst / name
        if not link.exists():
            os.symlink((src / name).resolve(), link)
    manifest = read_json(src / "dataset.json")
    manifest["heldout_of"] = {"data_dir": str(src.resolve()), "split": split, "n": n, "seed": seed,
                              "train_queries": kept["train"], "train_groups": n_groups}
    write_json(dst / "dataset.json", manifest)
    return manifest


def _filter_jsonl(src: Path, dst: Path, key: str, keep) -> int:
    """Copy the records of ``src`` whose ``key`` passes ``keep``; return how many were kept."""
    n = 0
    with atomic_write(dst) as out:
        for _, obj in iter_jsonl(src):
            if keep(str(obj[key])):
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
                n += 1
    return n


def _filter_lines(src: Path, dst: Path, keep) -> None:
    """Whitespace-separated files whose first column is the query id (TREC qrels and runs)."""
    with open(src, encoding="utf-8") as f, atomic_write(dst) as out:
        for line in f:
            if line.strip() and keep(line.split(None, 1)[0]):
                out.write(line)
