"""Hold out some train queries as a tuning split, so settings are never chosen on the test split.

:func:`split_heldout` turns a get_data.sh directory ``SRC`` into a new one ``DST`` that the stage
scripts read like any other (``DATA_DIR=DST EVAL_SPLIT=heldout bash run.sh``)::

    queries.train.jsonl qrels.train.tsv bm25.train.run train.bm25.jsonl   the train split minus N queries
    queries.heldout.jsonl qrels.heldout.tsv bm25.heldout.run              those N queries (qrels must be positive)
    bm25.heldout.metrics.json                                             BM25 on them (from the train BM25 run)
    corpus.jsonl bm25_index                                               symlinks to SRC's
    dataset.json                                                          SRC's, plus "heldout_of"

DST appears only when complete (built under a temporary name); bad input names file and line.

The held-out queries are a seeded random sample of the train queries that have a positive.
"""
from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

from densir.evaluation import evaluate
from densir.formats import read_qrels
from densir.io import (
    InputError,
    UsageError,
    atomic_dir,
    atomic_write,
    iter_jsonl,
    iter_run,
    read_json,
    read_run,
    require,
    write_json,
)


def split_heldout(src, dst, n: int, seed: int = 0, split: str = "train") -> dict:
    """Write DST from SRC with ``n`` of SRC's ``split`` queries held out; return DST's manifest.

    DST is built under a temporary name and renamed when complete, so a failed split leaves no
    DST behind and a rerun starts afresh. DST may exist only empty or as an earlier split (its
    ``dataset.json`` has ``heldout_of``), which is replaced.
    """
    src, dst = Path(src), Path(dst)
    if n < 1:
        raise UsageError(f"--n must be >= 1, got {n}")
    _check_replaceable(src, dst)
    manifest = read_json(src / "dataset.json")
    qrels = read_qrels(src / f"qrels.{split}.tsv")
    candidates = sorted(q for q, docs in qrels.items() if any(r > 0 for r in docs.values()))
    if n >= len(candidates):
        raise UsageError(f"cannot hold out {n} of {len(candidates)} {split} queries with a positive "
                         f"({src / f'qrels.{split}.tsv'})")
    heldout = set(random.Random(seed).sample(candidates, n))
    for _ in iter_run(src / f"bm25.{split}.run"):  # its lines are copied as they are: check them first
        pass

    def keep(qid, part):  # part: "train" keeps the rest, "heldout" keeps the sample
        return (qid in heldout) == (part == "heldout")

    kept = {}
    with atomic_dir(dst) as tmp:
        for part in ("train", "heldout"):
            kept[part] = _filter_jsonl(src / f"queries.{split}.jsonl", tmp / f"queries.{part}.jsonl", "query_id",
                                       lambda q, part=part: keep(q, part))
            _filter_lines(src / f"qrels.{split}.tsv", tmp / f"qrels.{part}.tsv", lambda q, part=part: keep(q, part))
            _filter_lines(src / f"bm25.{split}.run", tmp / f"bm25.{part}.run", lambda q, part=part: keep(q, part))
        if kept["heldout"] != n:
            raise InputError(src / f"queries.{split}.jsonl", None, f"{n - kept['heldout']} of the {n} held-out "
                             f"queries (judged in qrels.{split}.tsv) have no text here", "query_id")
        n_groups = _filter_jsonl(src / "train.bm25.jsonl", tmp / "train.bm25.jsonl", "query_id",
                                 lambda q: q not in heldout)
        scores = evaluate(read_qrels(tmp / "qrels.heldout.tsv"), read_run(tmp / "bm25.heldout.run"))
        write_json(tmp / "bm25.heldout.metrics.json", dict(scores, run=str(dst / "bm25.heldout.run")))
        if not (src / "corpus.jsonl").is_file():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(src / "corpus.jsonl"))
        for name in ("corpus.jsonl", "bm25_index"):
            if (src / name).exists():  # no bm25_index: nothing to link (BM25 runs are copied above)
                os.symlink((src / name).resolve(), tmp / name)
        manifest["heldout_of"] = {"data_dir": str(src.resolve()), "split": split, "n": n, "seed": seed,
                                  "train_queries": kept["train"], "train_groups": n_groups}
        write_json(tmp / "dataset.json", manifest)
    return manifest


def _check_replaceable(src: Path, dst: Path) -> None:
    """DST must be new, empty, or an earlier held-out split (never SRC, nor anything else)."""
    if not dst.exists():
        return
    if dst.resolve() == src.resolve():
        raise UsageError(f"--out_dir {dst} is --data_dir itself; choose a new directory")
    if not dst.is_dir():
        raise UsageError(f"--out_dir {dst} exists and is not a directory")
    if any(dst.iterdir()):
        try:
            earlier = "heldout_of" in read_json(dst / "dataset.json")
        except (OSError, ValueError):
            earlier = False
        if not earlier:
            raise UsageError(f"--out_dir {dst} exists and is not an earlier held-out split "
                             "(no dataset.json with 'heldout_of'); choose an empty or new directory")


def _filter_jsonl(src: Path, dst: Path, key: str, keep) -> int:
    """Copy the records of ``src`` whose ``key`` passes ``keep``; return how many were kept."""
    n = 0
    with atomic_write(dst) as out:
        for lineno, obj in iter_jsonl(src):
            if keep(require(obj, key, src, lineno)):
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
                n += 1
    return n


def _filter_lines(src: Path, dst: Path, keep) -> None:
    """Whitespace-separated files whose first column is the query id (TREC qrels and runs)."""
    with open(src, encoding="utf-8") as f, atomic_write(dst) as out:
        for line in f:
            if line.strip() and keep(line.split(None, 1)[0]):
                out.write(line)
