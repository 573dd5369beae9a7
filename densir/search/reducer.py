"""Reducer: per-shard TREC runs -> one top-k run.

    python -m densir.faiss_retriever.reducer --runs 'DIR/shard.*.run' --num_shards N --depth 1000 \\
        --save_ranking_to RUN

Reads  the runs of one search over N passage shards (``python -m densir.faiss_retriever`` with
       one ``--passage_reps`` shard per job): every file must list the same queries in the same
       order, which that search guarantees (it writes queries in query-shard order).
Writes one TREC run holding, per query, the best ``depth`` hits of all shards, sorted by
       score (ties by docid, as every densir run).

Streaming k-way merge: the files are read in lockstep, one query at a time, so memory is
O(shards x depth) whatever the number of queries. Refuses a missing shard (file count differs
from ``--num_shards``), shards that disagree on the queries, and a docid found in two shards.
Ids are strings throughout.
"""
from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Iterator, Sequence

from densir.io import InputError, UsageError, atomic_write, iter_run, write_run_hits

logger = logging.getLogger(__name__)


def merge_runs(paths: Sequence, depth: int) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """Yield ``(qid, hits)`` with the top-``depth`` hits over all runs, best first."""
    if not paths:
        raise UsageError("no runs to merge")
    streams = [iter_run(p) for p in paths]
    while True:
        items = [next(s, None) for s in streams]
        ended = [p for p, item in zip(paths, items) if item is None]
        if ended:
            if len(ended) != len(paths):
                qid = next(item[0] for item in items if item is not None)
                raise InputError(ended[0], None, f"ends before query {qid!r}, which other shard runs still have: "
                                 "shards disagree on the query set")
            return
        qid = items[0][0]
        for p, (other, _) in zip(paths, items):
            if other != qid:
                raise InputError(p, None, f"has query {other!r} where {paths[0]} has {qid!r}: "
                                 "shards disagree on the query set (or its order)", "qid")
        hits = [h for _, shard_hits in items for h in shard_hits]
        docids = {d for d, _ in hits}
        if len(docids) != len(hits):
            raise InputError(paths[0], None, f"query {qid!r}: a docid appears in two shard runs "
                             "(overlapping shards, or a run merged twice)")
        hits.sort(key=lambda h: (-h[1], h[0]))
        yield qid, hits[:depth]


def expand_runs(specs: Sequence[str], num_shards: int | None) -> list[str]:
    """Files named by ``specs`` (names or glob patterns), checked against the expected count."""
    paths: list[str] = []
    patterned = False
    for spec in specs:
        if glob.has_magic(spec):
            patterned = True
            matched = sorted(glob.glob(spec), key=_natural_key)
            if not matched:
                raise InputError(spec, None, "no run file matches")
            paths.extend(matched)
        else:
            if not Path(spec).is_file():
                raise InputError(spec, None, "no such run file")
            paths.append(spec)
    if len(set(paths)) != len(paths):
        raise InputError(specs[0], None, "the same run file is named twice")
    if patterned and num_shards is None:
        raise InputError(specs[0], None, "--num_shards is required with a pattern (a missing shard must not go unnoticed)")
    if num_shards is not None and len(paths) != num_shards:
        raise InputError(specs[0], None, f"matched {len(paths)} run file(s), expected --num_shards {num_shards}: "
                         f"{[str(p) for p in paths]}")
    return paths


def reduce_runs(specs: Sequence[str], save_ranking_to, depth: int, num_shards: int | None = None,
                tag: str = "densir") -> int:
    paths = expand_runs(specs, num_shards)
    logger.info("merging %d shard runs into %s (depth %d)", len(paths), save_ranking_to, depth)
    n = 0
    with atomic_write(save_ranking_to) as f:
        for qid, hits in merge_runs(paths, depth):
            write_run_hits(f, qid, hits, tag=tag, sort=False)
            n += 1
    return n


def _natural_key(path: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


