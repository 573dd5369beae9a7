"""Hold out some train queries as a tuning split, so settings are never chosen on the test split.

Two ways, one sample (a seeded random sample of the train queries that have a positive) and one
set of filters:

* :func:`split_heldout` turns a get_data.sh directory ``SRC`` into a new one ``DST`` that the stage
  scripts read like any other (``DATA_DIR=DST EVAL_SPLIT=heldout bash run.sh``)::

    queries.train.jsonl qrels.train.tsv bm25.train.run train.bm25.jsonl   the train split minus N queries
    queries.heldout.jsonl qrels.heldout.tsv bm25.heldout.run              those N queries (qrels must be positive)
    bm25.heldout.metrics.json                                             BM25 on them (from the train BM25 run)
    corpus.jsonl bm25_index                                               symlinks to SRC's
    dataset.json                                                          SRC's, plus "heldout_of"

  DST appears only when complete (built under a temporary name); bad input names file and line.

* :func:`holdout_in_place` does it inside one directory, as get_data.sh ``HOLDOUT=N`` runs it right
  after converting the data: ``queries.heldout.jsonl`` and ``qrels.heldout.tsv`` are written, then
  the train files (queries, qrels, and the BM25 run and train groups when they exist already) lose
  those queries, and ``dataset.json`` gets ``"heldout"`` (n, seed, split, the train queries left) last.
  A killed split resumes with the same queries (qrels.heldout.tsv, written first, names them);
  a complete one is left as it is (but for ``train_groups``, the train groups left, added once
  get_data.sh has built them), and a call with another n or seed is refused.
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
    ParameterError,
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

HELDOUT = "heldout"


def sample_heldout(qrels_path, n: int, seed: int = 0) -> set:
    """``n`` of the queries of ``qrels_path`` that have a positive, a seeded random sample."""
    qrels_path = Path(qrels_path)
    if n < 1:
        raise ParameterError("n", f"must be >= 1, got {n}")
    qrels = read_qrels(qrels_path)
    candidates = sorted(q for q, docs in qrels.items() if any(r > 0 for r in docs.values()))
    if n >= len(candidates):
        raise UsageError(f"cannot hold out {n} of {len(candidates)} {qrels_path.stem.split('.')[-1]} queries "
                         f"with a positive ({qrels_path})")
    return set(random.Random(seed).sample(candidates, n))


def split_files(src: Path, dst: Path, heldout: set, split: str = "train", parts=("train", HELDOUT),
                kinds=("queries", "qrels", "run")) -> dict:
    """Write ``dst``'s train and/or held-out ``kinds`` of files (queries, qrels, BM25 run) from
    ``src``'s ``split`` ones, and, with "train" in ``parts``, the train groups when ``src`` has them.
    ``src`` may be ``dst`` (each file is rewritten atomically). Returns the queries kept per part and
    ``groups``: the train groups kept."""
    files = {"queries": f"queries.{split}.jsonl", "qrels": f"qrels.{split}.tsv", "run": f"bm25.{split}.run"}
    if "run" in kinds:
        for _ in iter_run(src / files["run"]):  # its lines are copied as they are: check them first
            pass

    def keep(part):  # part "train" keeps the rest, HELDOUT keeps the sample
        return lambda qid: (qid in heldout) == (part == HELDOUT)

    kept = {}
    for part in parts:
        if "queries" in kinds:
            kept[part] = _filter_jsonl(src / files["queries"], dst / f"queries.{part}.jsonl", "query_id", keep(part))
        if "qrels" in kinds:
            _filter_lines(src / files["qrels"], dst / f"qrels.{part}.tsv", keep(part))
        if "run" in kinds:
            _filter_lines(src / files["run"], dst / f"bm25.{part}.run", keep(part))
    if HELDOUT in kept and kept[HELDOUT] != len(heldout):
        (dst / f"queries.{HELDOUT}.jsonl").unlink(missing_ok=True)
        raise InputError(src / files["queries"], None, f"{len(heldout) - kept[HELDOUT]} of the {len(heldout)} "
                         f"held-out queries (judged in {files['qrels']}) have no text here", "query_id")
    if "train" in parts and (src / "train.bm25.jsonl").is_file():
        kept["groups"] = _filter_jsonl(src / "train.bm25.jsonl", dst / "train.bm25.jsonl", "query_id",
                                       lambda q: q not in heldout)
    return kept


def split_heldout(data_dir, out_dir, n: int, seed: int = 0, split: str = "train") -> dict:
    """Write ``out_dir`` (DST) from ``data_dir`` (SRC) with ``n`` of SRC's ``split`` queries held out; return
    DST's manifest.

    DST is built under a temporary name and renamed when complete, so a failed split leaves no
    DST behind and a rerun starts afresh. DST may exist only empty or as an earlier split (its
    ``dataset.json`` has ``heldout_of``), which is replaced.
    """
    src, dst = Path(data_dir), Path(out_dir)
    if n < 1:
        raise ParameterError("n", f"must be >= 1, got {n}")
    _check_replaceable(src, dst)
    manifest = read_json(src / "dataset.json")
    heldout = sample_heldout(src / f"qrels.{split}.tsv", n, seed)
    with atomic_dir(dst) as tmp:
        kept = split_files(src, tmp, heldout, split)
        scores = evaluate(read_qrels(tmp / "qrels.heldout.tsv"), read_run(tmp / "bm25.heldout.run"))
        write_json(tmp / "bm25.heldout.metrics.json", dict(scores, run=str(dst / "bm25.heldout.run")))
        if not (src / "corpus.jsonl").is_file():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(src / "corpus.jsonl"))
        for name in ("corpus.jsonl", "bm25_index"):
            if (src / name).exists():  # no bm25_index: nothing to link (BM25 runs are copied above)
                os.symlink((src / name).resolve(), tmp / name)
        manifest["heldout_of"] = {"data_dir": str(src.resolve()), "split": split, "n": n, "seed": seed,
                                  "train_queries": kept["train"], "train_groups": kept["groups"]}
        write_json(tmp / "dataset.json", manifest)
    return manifest


def holdout_in_place(data_dir, n: int, seed: int = 0, split: str = "train") -> dict:
    """Hold out ``n`` of ``data_dir``'s ``split`` queries inside ``data_dir``; return its manifest.

    Writes ``qrels.heldout.tsv`` then ``queries.heldout.jsonl``, rewrites the ``split`` files without
    those queries (queries, qrels, and ``bm25.<split>.run`` / ``train.bm25.jsonl`` when they exist:
    the BM25 run of the held-out queries is get_data.sh's own search; stale ``train.bm25.stats.json``
    and ``train.bm25.tok.jsonl`` are removed, for get_data.sh to rebuild), and records ``"heldout"``
    in ``dataset.json`` last. A directory split already (``"heldout"``) is left alone when ``n``,
    ``seed`` and ``split`` agree, else refused.
    """
    data_dir = Path(data_dir)
    if n < 1:
        raise ParameterError("n", f"must be >= 1, got {n}")
    manifest = read_json(data_dir / "dataset.json")
    want = {"split": split, "n": n, "seed": seed}
    done = manifest.get(HELDOUT)
    if done:
        if {k: done.get(k) for k in want} != want:
            raise UsageError(f"{data_dir} already holds out {done.get('n')} {done.get('split')} queries (seed "
                             f"{done.get('seed')}), not {n} (seed {seed}): write the data to a new directory")
        if "train_groups" not in done and (data_dir / "train.bm25.jsonl").is_file():
            return record_train_groups(data_dir)
        return manifest
    qrels_heldout = data_dir / "qrels.heldout.tsv"
    if qrels_heldout.is_file():  # a split that was killed: the same queries again
        heldout = set(read_qrels(qrels_heldout))
        if len(heldout) != n:
            raise UsageError(f"{qrels_heldout} holds {len(heldout)} queries, not {n}: delete the held-out files "
                             "and rerun, or write the data to a new directory")
    else:
        heldout = sample_heldout(data_dir / f"qrels.{split}.tsv", n, seed)
        split_files(data_dir, data_dir, heldout, split, parts=(HELDOUT,), kinds=("qrels",))
    if not (data_dir / "queries.heldout.jsonl").is_file():  # the train queries are still whole
        split_files(data_dir, data_dir, heldout, split, parts=(HELDOUT,), kinds=("queries",))
    run = ("run",) if (data_dir / f"bm25.{split}.run").is_file() else ()
    kept = split_files(data_dir, data_dir, heldout, split, parts=("train",), kinds=("queries", "qrels") + run)
    for stale in ("train.bm25.stats.json", "train.bm25.tok.jsonl"):
        (data_dir / stale).unlink(missing_ok=True)
    manifest[HELDOUT] = dict(want, train_queries=kept["train"])
    if "groups" in kept:
        manifest[HELDOUT]["train_groups"] = kept["groups"]
    write_json(data_dir / "dataset.json", manifest)
    return manifest


def record_train_groups(data_dir) -> dict:
    """Add to ``dataset.json``'s ``"heldout"`` how many train groups ``train.bm25.jsonl`` holds."""
    data_dir = Path(data_dir)
    manifest = read_json(data_dir / "dataset.json")
    if HELDOUT not in manifest:
        raise UsageError(f"{data_dir / 'dataset.json'} records no held-out queries")
    groups = data_dir / "train.bm25.jsonl"
    if groups.is_file():
        manifest[HELDOUT]["train_groups"] = sum(1 for _ in iter_jsonl(groups))
        write_json(data_dir / "dataset.json", manifest)
    return manifest


def _check_replaceable(src: Path, dst: Path) -> None:
    """DST must be new, empty, or an earlier held-out split (never SRC, nor anything else)."""
    if not dst.exists():
        return
    if dst.resolve() == src.resolve():
        raise ParameterError(f"`out_dir` {dst} is `data_dir` itself; choose a new directory")
    if not dst.is_dir():
        raise ParameterError("out_dir", f"{dst} exists and is not a directory")
    if any(dst.iterdir()):
        try:
            earlier = "heldout_of" in read_json(dst / "dataset.json")
        except (OSError, ValueError):
            earlier = False
        if not earlier:
            raise ParameterError("out_dir", f"{dst} exists and is not an earlier held-out split "
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
