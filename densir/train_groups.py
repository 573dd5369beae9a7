"""Build train groups (Tevatron layout) from qrels + a retrieval run: BM25 or dense hard negatives.

One builder serves both rounds: round 1 samples negatives from a BM25 run, round 2 from the
round-1 model's run with the top ``skip`` ranks left out (a guard against unlabelled positives).

For each query with at least one positive (rel > 0) in the qrels:
    positives = the judged relevant docs
    negatives = run hits at ranks (skip, depth] that are not judged relevant,
                ``n_sample`` of them drawn without replacement by a RNG seeded with (seed, qid),
                so a query's sample does not depend on file order or on other queries.
Queries without a positive, without any negative, or absent from the run are counted and
reported in the stats, never silently dropped.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator, Mapping

from densir.io import InputError
from densir.rng import seeded_rng

logger = logging.getLogger(__name__)


def build_train_groups(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                       run: Iterable[tuple[str, list[tuple[str, float]]]],
                       corpus: Mapping[str, tuple[str, str]], depth: int = 200, n_sample: int = 30,
                       seed: int = 42, skip: int = 0, stats: dict | None = None, run_path=None,
                       queries_path=None) -> Iterator[dict]:
    """Yield train-group records; fill ``stats`` with counts of what was kept and skipped.

    ``run`` yields ``(qid, hits)`` best first (``densir.io.iter_run``). ``corpus`` maps
    docid -> (title, text). Only queries with qrels are considered. A judged query whose text is
    missing, or a docid in its top ``depth`` that the corpus lacks (a run over another corpus),
    is an :class:`densir.io.InputError` naming ``run_path`` and the line (``queries_path``, the
    corpus: named in the message).
    """
    stats = stats if stats is not None else {}
    stats.update(groups=0, queries_in_run=0, no_positive=0, no_negative=0, fewer_than_n_sample=0,
                 not_in_run=0, negatives=0, positives=0)
    seen = set()
    for qid, hits in run:
        stats["queries_in_run"] += 1
        seen.add(qid)
        positives = [d for d, rel in qrels.get(qid, {}).items() if rel > 0]
        if not positives:
            stats["no_positive"] += 1
            continue
        _check_known(qid, hits[:depth], queries, corpus, run_path, queries_path)
        pos_set = set(positives)
        candidates = [d for d, _ in hits[skip:depth] if d not in pos_set]
        if not candidates:
            stats["no_negative"] += 1
            continue
        if len(candidates) > n_sample:
            negatives = seeded_rng(seed, qid).sample(candidates, n_sample)
        else:
            negatives = candidates
            stats["fewer_than_n_sample"] += len(candidates) < n_sample
        stats["groups"] += 1
        stats["positives"] += len(positives)
        stats["negatives"] += len(negatives)
        yield {
            "query_id": qid,
            "query": queries[qid],
            "positive_passages": [_passage(corpus, d) for d in positives],
            "negative_passages": [_passage(corpus, d) for d in negatives],
        }
    stats["not_in_run"] = sum(1 for q, docs in qrels.items() if q not in seen and any(r > 0 for r in docs.values()))


def _check_known(qid: str, hits, queries: Mapping, corpus: Mapping, run_path, queries_path) -> None:
    run_name = run_path if run_path is not None else "run"
    if qid not in queries:
        raise InputError.in_run(run_name, qid, f"query {qid!r} is in the run and the qrels but not in the queries"
                                f"{f' {queries_path}' if queries_path else ''}", "qid")
    for docid, _ in hits:
        if docid not in corpus:
            raise InputError.in_run(run_name, qid, f"docid {docid!r} is not in the corpus", "docid", docid=docid)


def _passage(corpus, docid: str) -> dict:
    title, text = corpus[docid]  # every docid was checked by _check_known (positives by read_qrels)
    return {"docid": docid, "title": title, "text": text}


def describe_stats(stats: Mapping[str, int]) -> str:
    g = stats["groups"]
    mean = stats["negatives"] / g if g else 0.0
    return (f"{g} groups written ({mean:.1f} negatives on average); skipped: "
            f"{stats['no_positive']} queries without a positive, {stats['no_negative']} without a negative, "
            f"{stats['not_in_run']} judged queries absent from the run; "
            f"{stats['fewer_than_n_sample']} groups have fewer negatives than asked")


def build_train_file(queries_path, qrels_path, run_path, corpus_path, out, depth: int = 200, skip: int = 0,
                     n_sample: int = 30, seed: int = 42) -> dict:
    """Files in, train-group JSONL out: ``out`` (atomic) and its stats beside it (``.stats.json``)."""
    from pathlib import Path

    from densir.formats import read_corpus, read_qrels, read_queries
    from densir.io import iter_run, write_json, write_jsonl

    corpus = read_corpus(corpus_path)
    qrels = read_qrels(qrels_path, doc_ids=set(corpus))
    queries = read_queries(queries_path)
    if not queries:
        raise InputError(queries_path, None, "no queries")
    stats: dict = {}
    groups = build_train_groups(queries, qrels, iter_run(run_path), corpus,
                                depth=depth, n_sample=n_sample, seed=seed, skip=skip, stats=stats,
                                run_path=run_path, queries_path=queries_path)
    write_jsonl(out, _at_least_one(groups, stats, run_path))
    stats.update(depth=depth, skip=skip, n_sample=n_sample, seed=seed, run=str(run_path))
    write_json(Path(str(out)).with_suffix(".stats.json"), stats)
    return stats


def _at_least_one(groups: Iterator[dict], stats: dict, run_path) -> Iterator[dict]:
    """``groups``, then an error (inside the atomic write, so no file appears) if there were none."""
    yield from groups
    if not stats["queries_in_run"]:
        raise InputError(run_path, None, "run is empty")
    if not stats["groups"]:
        raise InputError(run_path, None, f"no train group: {describe_stats(stats)}")


def build_train_cli(description: str, defaults: dict | None = None, argv=None) -> None:
    """The CLI of ``tools/build_train.py`` (and ``tools/build_train_hn.py``, with other ``defaults``)."""
    import argparse

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--run", required=True, help="TREC run, e.g. BM25 or a round-1 dense run")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=int, default=200, help="sample negatives from the top DEPTH hits")
    ap.add_argument("--skip", type=int, default=0, help="leave out the top SKIP hits (false-negative guard)")
    ap.add_argument("--n_sample", type=int, default=30, help="negatives per query")
    ap.add_argument("--seed", type=int, default=42)
    ap.set_defaults(**(defaults or {}))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = build_train_file(args.queries, args.qrels, args.run, args.corpus, args.out, depth=args.depth,
                             skip=args.skip, n_sample=args.n_sample, seed=args.seed)
    print(f"{args.out}: {describe_stats(stats)}")

