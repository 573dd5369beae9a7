"""Re-rank the top-k of a TREC run with a cross-encoder (the stage behind ``python -m densir.driver.rerank``).

    python -m densir.driver.rerank --model_name_or_path M --run RUN --corpus corpus.jsonl \\
        --queries queries.jsonl --depth 100 --save_ranking_to OUT.run \\
        [--query_shard i --num_query_shards n] [--precision auto|fp32|fp16|bf16] [--batch_size 64] [--max_len 512] \\
        [--interpolate ALPHA]
    python -m densir.driver.rerank --save_ranking_to OUT.run --num_query_shards n --merge_query_shards

Reads a TREC run (any: BM25, dense, another reranker's), the corpus JSONL and the queries JSONL, or
in their place Hugging Face datasets in the same layouts (:class:`densir.formats.HFDataset`):
``--dataset_name Tevatron/msmarco-passage-corpus`` for the corpus, ``--query_dataset_name
Tevatron/msmarco-passage --query_dataset_split dev`` for the queries.
Each query's first ``--depth`` hits (file order, i.e. the run's ranking) are scored by the
cross-encoder (raw logits, see :mod:`densir.reranker.modeling`); hits below the depth are dropped.
Writes a TREC run, ranks 1..depth per query by descending score, queries in the input run's
order, tag ``--tag``; the file appears only when complete.

Sharding for array jobs: the run's queries, in file order, are cut into ``--num_query_shards``
contiguous ranges; job ``--query_shard i`` scores range i and writes ``OUT.qshard-i-of-n``.
Query shards are disjoint, so merging is concatenation in shard order (the reducer of
``densir.faiss_retriever`` merges *passage* shards of the same queries, a different job):
``--merge_query_shards`` checks that all n shard runs exist and hold disjoint queries, then writes
OUT. Memory is O(queries in the shard x depth): only the passages the shard needs are kept from
the corpus, so an 8.8M-passage corpus is streamed, not loaded.

A docid the corpus lacks, or a qid the queries file lacks, fails before any scoring with the run
file and line at fault.
"""
from __future__ import annotations

import logging
from pathlib import Path

from densir.io import UsageError, usage_errors
from densir.loading import check_backend, load_model
from densir.precision import precision_from_flags
from densir.reranker.arguments import RerankArguments

logger = logging.getLogger(__name__)



def run_rerank(args: RerankArguments) -> Path:
    """Re-rank (or merge) as the arguments say; return the path written."""
    if not args.save_ranking_to:
        raise UsageError("--save_ranking_to is required")
    if not 0 <= args.query_shard < args.num_query_shards:
        raise UsageError(f"--query_shard must be in 0..{args.num_query_shards - 1}, got {args.query_shard}")
    if args.merge_query_shards:
        paths = [query_shard_path(args.save_ranking_to, i, args.num_query_shards) for i in range(args.num_query_shards)]
        n = merge_query_shards(paths, args.save_ranking_to)
        print(f"merged {len(paths)} query shards ({n} queries) -> {args.save_ranking_to}")
        return Path(args.save_ranking_to)
    for name in ("model_name_or_path", "run"):
        if not getattr(args, name):
            raise UsageError(f"--{name} is required")
    corpus, queries = _text_sources(args)
    if args.depth < 1:
        raise UsageError(f"--depth must be positive, got {args.depth}")
    if args.interpolate is not None and not 0.0 <= args.interpolate <= 1.0:
        raise UsageError(f"--interpolate must be in [0, 1], got {args.interpolate}")
    request = args.precision or precision_from_flags(args.fp16, args.bf16)
    with usage_errors():
        check_backend(args.backend, args.quantize, args.backend_recipe, request, task="cross-encoder")
    out = args.save_ranking_to if args.num_query_shards == 1 else \
        query_shard_path(args.save_ranking_to, args.query_shard, args.num_query_shards)

    import time

    t0 = time.time()
    run = load_run_shard(args.run, args.depth, args.query_shard, args.num_query_shards)
    queries, passages = load_texts(args.run, run, queries, corpus)
    logger.info("shard %d/%d: %d queries, %d pairs, %d passages (%.1fs)", args.query_shard, args.num_query_shards,
                len(run), sum(len(h) for h in run.values()), len(passages), time.time() - t0)
    reranker = load_model(args.model_name_or_path, "cross-encoder", args.device, request, args.backend, args.quantize,
                          args.backend_recipe, max_len=args.max_len, revision=args.model_revision,
                          calibration=lambda: ((queries[q], passages[d]) for q in run for d, _ in run[q]))
    n_pairs = rerank_run(reranker, run, queries, passages, out, batch_size=args.batch_size,
                         precision=reranker.inference.precision, tag=args.tag,
                         interpolate=args.interpolate)
    dt = time.time() - t0
    print(f"re-ranked {len(run)} queries, {n_pairs} pairs in {dt:.1f}s ({n_pairs / max(dt, 1e-9):.1f} pairs/s) -> {out}")
    return Path(out)


def _text_sources(args: RerankArguments):
    """(corpus, queries): each a JSONL path or a :class:`densir.formats.HFDataset`, exactly one of each."""
    from densir.formats import hf_dataset_from

    sources = []
    for flag, prefix in (("corpus", ""), ("queries", "query_")):
        path, dataset = getattr(args, flag), hf_dataset_from(args, prefix)
        if bool(path) == bool(dataset):
            raise UsageError(f"give one of --{flag} (a JSONL file) and --{prefix}dataset_name (a HF dataset)")
        sources.append(path or dataset)
    return tuple(sources)


# --------------------------------------------------------------------------- the work
def rerank_run(reranker, run: dict, queries: dict, passages: dict, out, batch_size: int = 64,
               precision: str | None = None, tag: str = "densir-rerank", chunk_pairs: int | None = None,
               interpolate: float | None = None) -> int:
    """Score every (query, hit) of ``run`` and write the re-ranked run to ``out`` (atomically).

    With ``interpolate=alpha`` the written score is :func:`densir.search.fusion.interpolate_hits` of the
    run's own (first-stage) scores and the re-ranker's; otherwise the re-ranker's raw score.
    Scored by :func:`score_run` (``chunk_pairs``); output keeps the run's query order.
    """
    from tqdm.auto import tqdm

    from densir.io import atomic_write, write_run_hits
    from densir.search.fusion import interpolate_hits

    n_pairs = 0
    with atomic_write(out) as f, tqdm(total=len(run), desc="rerank", unit="q", mininterval=5) as bar:
        for q, hits in score_run(reranker, run, queries, passages, batch_size, precision, chunk_pairs):
            if interpolate is not None:
                hits = interpolate_hits(run[q], hits, interpolate)
            write_run_hits(f, q, hits, tag=tag)
            n_pairs += len(hits)
            bar.update(1)
    return n_pairs


def score_run(reranker, run: dict, queries: dict, passages: dict, batch_size: int = 64, precision: str | None = None,
              chunk_pairs: int | None = None):
    """Yield ``(qid, [(docid, raw score), ...])`` for each query of ``run``, in run order and hit order.

    Queries are scored in chunks of about ``chunk_pairs`` pairs (default 32 batches), so length
    sorting has many pairs to bucket while memory stays bounded.
    """
    chunk_pairs = chunk_pairs or 32 * batch_size
    qids = list(run)
    start = 0
    while start < len(qids):
        end, size = start, 0
        while end < len(qids) and (size == 0 or size + len(run[qids[end]]) <= chunk_pairs):
            size += len(run[qids[end]])
            end += 1
        chunk = qids[start:end]
        pairs = [(queries[q], passages[d]) for q in chunk for d, _ in run[q]]
        scores = reranker.predict(pairs, batch_size=batch_size, precision=precision)
        i = 0
        for q in chunk:
            yield q, [(d, float(scores[i + j])) for j, (d, _) in enumerate(run[q])]
            i += len(run[q])
        start = end


def load_run_shard(path, depth: int, shard: int = 0, num_shards: int = 1) -> dict[str, list[tuple[str, float]]]:
    """This shard's queries of a run (contiguous range in file order), each cut to its top ``depth``."""
    from densir.io import InputError, iter_run

    qids = [qid for qid, _ in iter_run(path)]
    if not qids:
        raise InputError(path, None, "run is empty")
    lo, hi = shard * len(qids) // num_shards, (shard + 1) * len(qids) // num_shards
    wanted = set(qids[lo:hi])
    return {qid: hits[:depth] for qid, hits in iter_run(path) if qid in wanted}


def load_texts(run_path, run: dict, queries_path, corpus_path) -> tuple[dict, dict]:
    """The query texts and passage texts ``run`` needs; anything missing names the run's line."""
    from densir.formats import iter_corpus, passage_text, read_queries
    from densir.io import InputError

    all_queries = read_queries(queries_path)
    for qid in run:
        if qid not in all_queries:
            raise InputError.in_run(run_path, qid, f"query {qid!r} is not in {queries_path}", "qid")
    queries = {qid: all_queries[qid] for qid in run}
    needed = {d for hits in run.values() for d, _ in hits}
    passages = {}
    for docid, title, text in iter_corpus(corpus_path):
        if docid in needed:
            passages[docid] = text if isinstance(text, list) else passage_text(title, text)
    if len(passages) < len(needed):
        for qid, hits in run.items():
            for docid, _ in hits:
                if docid not in passages:
                    raise InputError.in_run(run_path, qid, f"docid {docid!r} is not in the corpus {corpus_path}",
                                            "docid", docid=docid)
    return queries, passages


def query_shard_path(out, shard: int, num_shards: int) -> str:
    return f"{out}.qshard-{shard}-of-{num_shards}"


def merge_query_shards(paths, out) -> int:
    """Concatenate disjoint query-shard runs, in order and line for line, into ``out``.

    Refuses a missing shard and a query found in two shards; returns the number of queries.
    """
    from densir.io import InputError, atomic_write, iter_run

    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"missing query shard run(s): {', '.join(missing)}")
    seen: dict[str, str] = {}
    for p in paths:
        for qid, _ in iter_run(p):  # also validates each shard's format
            if qid in seen:
                raise InputError.in_run(p, qid, f"query {qid!r} is also in {seen[qid]}", "qid")
            seen[qid] = str(p)
    with atomic_write(out) as f:
        for p in paths:
            with open(p, encoding="utf-8") as src:
                for line in src:
                    if line.strip():
                        f.write(line if line.endswith("\n") else line + "\n")
    return len(seen)
