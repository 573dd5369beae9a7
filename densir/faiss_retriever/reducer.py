"""Reducer CLI: per-shard TREC runs -> one top-k run (Tevatron's name; the merge is :mod:`densir.search.shard_runs`).

    python -m densir.faiss_retriever.reducer --runs 'DIR/shard.*.run' --num_shards N --depth 1000 \\
        --save_ranking_to RUN

Every run must list the same queries in the same order (one search job per passage shard writes
them so); the merged run holds each query's best --depth hits of all shards. Refuses a missing
shard (file count differs from --num_shards), shards that disagree on the queries, and a docid
found in two shards.
"""
from __future__ import annotations

import logging

from densir.checks import at_least, check_output_path, parse_checked
from densir.io import cli_errors, cli_parser
from densir.search.shard_runs import reduce_shard_runs


@cli_errors
def main(argv=None) -> None:
    parser = cli_parser("python -m densir.faiss_retriever.reducer", __doc__)
    parser.add_argument("--runs", nargs="+", required=True, help="shard run files, or a pattern ('DIR/shard.*.run')")
    parser.add_argument("--num_shards", type=at_least(1), default=None,
                        help="expected number of shard runs (required with a pattern)")
    parser.add_argument("--depth", type=at_least(1), default=1000, help="hits per query in the merged run")
    parser.add_argument("--save_ranking_to", required=True, help="merged TREC run to write")
    parser.add_argument("--tag", default="densir")
    args = parse_checked(parser, argv)
    check_output_path("--save_ranking_to", args.save_ranking_to)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    n = reduce_shard_runs(args.runs, args.save_ranking_to, args.depth, args.num_shards, args.tag)
    print(f"{args.save_ranking_to}: {n} queries, depth {args.depth}")


if __name__ == "__main__":
    main()
