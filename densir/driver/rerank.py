"""Re-rank the top-k of a TREC run with a cross-encoder: ``python -m densir.driver.rerank``.

    python -m densir.driver.rerank --model_name_or_path M --run RUN --corpus corpus.jsonl \\
        --queries queries.jsonl --depth 100 --save_ranking_to OUT.run \\
        [--query_shard i --num_query_shards n] [--bf16 | --fp16] [--batch_size 64] [--max_len 512] \\
        [--interpolate ALPHA]
    python -m densir.driver.rerank --save_ranking_to OUT.run --num_query_shards n --merge_query_shards

Reads a TREC run (any: BM25, dense, another reranker's), the corpus JSONL and the queries JSONL.
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
import sys

from densir.arguments import parse_args
from densir.io import cli_errors, usage_errors
from densir.reranker.arguments import RerankArguments
from densir.reranker.rerank import run_rerank

__all__ = ["main", "run_rerank"]


@cli_errors
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    with usage_errors(argv):
        (args,) = parse_args(RerankArguments, argv=argv)
    run_rerank(args)


if __name__ == "__main__":
    main()
