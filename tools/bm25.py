"""Lucene BM25 (pyserini) over a densir corpus.

    python tools/bm25.py index  --corpus corpus.jsonl --index bm25_index [--threads 2]
    python tools/bm25.py search --index bm25_index --queries queries.test.jsonl --run bm25.test.run [--depth 1000]

The index directory and the run file appear only when complete.
"""
import argparse
import logging

from densir.formats import read_queries
from densir.io import InputError, cli_errors
from densir.search import bm25


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ix = sub.add_parser("index")
    ix.add_argument("--corpus", required=True)
    ix.add_argument("--index", required=True)
    ix.add_argument("--threads", type=int, default=1)
    se = sub.add_parser("search")
    se.add_argument("--index", required=True)
    se.add_argument("--queries", required=True)
    se.add_argument("--run", required=True)
    se.add_argument("--depth", type=int, default=1000)
    se.add_argument("--threads", type=int, default=1)
    se.add_argument("--keep_query_doc", action="store_true",
                    help="keep a hit whose docid equals the query id (dropped by default, as Pyserini's BEIR runs do)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "index":
        bm25.build_index(args.corpus, args.index, threads=args.threads)
    else:
        queries = read_queries(args.queries)
        if not queries:
            raise InputError(args.queries, None, "no queries")
        n = bm25.search_to_run(args.index, queries, args.run, k=args.depth,
                                threads=args.threads, remove_query=not args.keep_query_doc)
        print(f"BM25: {n} queries -> {args.run}")


if __name__ == "__main__":
    main()
