"""Per-shard TREC runs -> one top-k run: the merge behind ``python -m densir.faiss_retriever.reducer``.

Reads  the runs of one search over N passage shards (``python -m densir.faiss_retriever`` with
       one passage shard per job): every file must list the same queries in the same order,
       which that search guarantees (it writes queries in query-shard order).
Writes one TREC run holding, per query, the best ``depth`` hits of all shards, merged by
       :func:`densir.ranking.merge` (score desc, ties by docid, as every densir run).

Streaming k-way merge: the files are read in lockstep, one query at a time, so memory is
O(shards x depth) whatever the number of queries. Refuses a missing shard (file count differs
from ``num_shards``), shards that disagree on the queries, and a docid found in two shards.
Ids are strings throughout. Runs of chunked passage shards (``encode --chunk_tokens``) hold
documents already scored by their windows (MaxP or FirstP) under their corpus ids; a passage's windows
are all in one shard, so the merge is the same and equals one search over all shards.
"""
from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import Iterator, Sequence

from densir.io import InputError, ParameterError, iter_run, write_run
from densir.ranking import Hit, merge

logger = logging.getLogger(__name__)


def merge_shard_runs(paths: Sequence, depth: int) -> Iterator[tuple[str, list[Hit]]]:
    """Yield ``(qid, hits)`` with the top-``depth`` hits over all runs, best first."""
    if not paths:
        raise ParameterError("runs", "no runs to merge")
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
        lists = [shard_hits for _, shard_hits in items]
        if len({d for hits in lists for d, _ in hits}) != sum(map(len, lists)):
            raise InputError(paths[0], None, f"query {qid!r}: a docid appears in two shard runs "
                             "(overlapping shards, or a run merged twice)")
        yield qid, merge(lists, depth)


def expand_shard_runs(specs: Sequence[str], num_shards: int | None) -> list[str]:
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
        raise ParameterError("num_shards", f"is required with a pattern ({specs[0]}): a missing shard must not "
                             "go unnoticed")
    if num_shards is not None and len(paths) != num_shards:
        raise ParameterError("num_shards", f"{specs[0]} matched {len(paths)} run file(s), expected {num_shards}: "
                             f"{[str(p) for p in paths]}")
    return paths


def reduce_shard_runs(specs: Sequence[str], save_ranking_to, depth: int, num_shards: int | None = None,
                      tag: str = "densir") -> int:
    """Merge the shard runs ``specs`` names into the run ``save_ranking_to``; return the number of queries."""
    if depth < 1:
        raise ParameterError("depth", f"must be >= 1, got {depth}")
    paths = expand_shard_runs(specs, num_shards)
    logger.info("merging %d shard runs into %s (depth %d)", len(paths), save_ranking_to, depth)
    return write_run(save_ranking_to, merge_shard_runs(paths, depth), tag, sort=False)


def _natural_key(path: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]
