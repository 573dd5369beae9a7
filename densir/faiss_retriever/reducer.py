"""Reducer CLI: per-shard TREC runs -> one top-k run (Tevatron's name; the merge is :mod:`densir.search.reducer`).

    python -m densir.faiss_retriever.reducer --runs 'DIR/shard.*.run' --num_shards N --depth 1000 \\
        --save_ranking_to RUN
"""
from __future__ import annotations

import argparse
import logging

from densir.checks import at_least, check_output_path, check_parser_ranges
from densir.io import cli_errors
from densir.search.reducer import __doc__ as _REDUCER_DOC
from densir.search.reducer import reduce_runs


@cli_errors
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m densir.faiss_retriever.reducer", description=_REDUCER_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="shard run files, or a pattern ('DIR/shard.*.run')")
    parser.add_argument("--num_shards", type=at_least(1), default=None, help="expected number of shard runs (required with a pattern)")
    parser.add_argument("--depth", type=at_least(1), default=1000, help="hits per query in the merged run")
    parser.add_argument("--save_ranking_to", required=True, help="merged TREC run to write")
    parser.add_argument("--tag", default="densir")
    args = parser.parse_args(argv)
    check_parser_ranges(parser, args)
    check_output_path("--save_ranking_to", args.save_ranking_to)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    n = reduce_runs(args.runs, args.save_ranking_to, args.depth, args.num_shards, args.tag)
    print(f"{args.save_ranking_to}: {n} queries, depth {args.depth}")


if __name__ == "__main__":
    main()
