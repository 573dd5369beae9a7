"""Search a built round from the command line: ``python -m densir.search``.

    python -m densir.search --index OUT_DIR/round2 [--reranker OUT_DIR/rerank] [--k 10] \\
        [--rerank_depth 100] [--interpolate ALPHA] [--corpus corpus.jsonl] [--json] "query" ...
    printf 'query one\\nquery two\\n' | python -m densir.search --index OUT_DIR/round2

Reads what :class:`densir.search.searcher.Searcher` reads (the round's model and corpus shards,
the corpus JSONL, optionally a re-ranker and a BM25 index); writes nothing. Queries are the
arguments, or, without any, the non-blank lines of stdin. Prints for each query a line
``query <n>: <text>`` and then one line per hit, ``rank docid score title | snippet``; with
``--json``, one JSON object per query (``{"query", "hits": [Hit fields]}``) instead. Bad input
(a missing round dir, an incomplete shard, a corpus that is not the encoded one) ends with one
line ``error: ...`` and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from densir.checks import at_least, between, check_texts, parse_checked
from densir.io import UsageError, cli_errors, cli_parser, iter_lines
from densir.ranking import format_score

SNIPPET_CHARS = 160


def build_parser() -> argparse.ArgumentParser:
    ap = cli_parser("python -m densir.search", __doc__)
    ap.add_argument("queries", nargs="*", help="queries (default: one per line on stdin)")
    ap.add_argument("--index", required=True, help="a round directory of the pipeline, e.g. OUT_DIR/round2")
    ap.add_argument("--reranker", help="re-ranker dir (rerank.sh's OUT_DIR/rerank or its model/)")
    ap.add_argument("--k", type=at_least(1), default=10, help="hits per query")
    ap.add_argument("--rerank_depth", type=at_least(0), default=100, help="re-rank the first stage's top N (0: do not)")
    ap.add_argument("--interpolate", type=between(0, 1), help="ALPHA in [0, 1]: fuse first-stage and re-ranker scores")
    ap.add_argument("--corpus", help="corpus JSONL (default: the path the shards were encoded from)")
    ap.add_argument("--bm25_index", help="get_data.sh's DATA_DIR/bm25_index, for --retriever bm25")
    ap.add_argument("--retriever", default="dense", choices=("dense", "bm25"), help="first stage")
    ap.add_argument("--device", help="cuda | cpu (default: cuda when available)")
    ap.add_argument("--json", action="store_true", help="one JSON object per query instead of text")
    return ap


@cli_errors
def main(argv=None) -> None:
    ap = build_parser()
    args = parse_checked(ap, argv)
    if args.reranker and args.rerank_depth and args.k > args.rerank_depth:
        ap.error(f"--k {args.k} is more than --rerank_depth {args.rerank_depth}: only re-ranked hits are shown")
    if args.interpolate is not None and not (args.reranker and args.rerank_depth):
        ap.error("--interpolate needs --reranker (and --rerank_depth > 0)")
    if args.retriever == "bm25" and not args.bm25_index:
        ap.error("--retriever bm25 needs --bm25_index")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars around the hits
    if args.queries:
        try:
            queries = check_texts(args.queries, "query")  # an argument can hold a lone surrogate (bad bytes)
        except ValueError as e:
            raise UsageError(str(e)) from None
    else:  # stdin as bytes: bad bytes are one line naming the line, not a decoding traceback
        queries = [line.strip() for _, line in iter_lines(sys.stdin.buffer) if line.strip()]
    if not queries:
        ap.error("no queries: give them as arguments or one per line on stdin")

    from densir.search.searcher import Searcher

    searcher = Searcher.from_run_dir(args.index, corpus=args.corpus, reranker=args.reranker,
                                     bm25_index=args.bm25_index, device=args.device)
    results = searcher.search_batch(queries, k=args.k, rerank_depth=args.rerank_depth,
                                    interpolate=args.interpolate, retriever=args.retriever)
    for n, (query, hits) in enumerate(zip(queries, results), 1):
        if args.json:
            print(json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
            continue
        print(f"query {n}: {query}")
        for h in hits:
            print(f"{h.rank:>4} {h.docid} {format_score(h.score)} {_one_line(h.title)} | {_snippet(h.text)}")


def _one_line(s) -> str:
    return " ".join(str(s or "").split())


def _snippet(text) -> str:
    text = _one_line(text)
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 3].rstrip() + "..."


if __name__ == "__main__":
    main()
