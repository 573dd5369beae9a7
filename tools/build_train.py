"""Train groups (Tevatron layout) from qrels + a retrieval run: positives from the qrels,
negatives sampled from the run's top --depth minus positives (after skipping --skip ranks).

    python tools/build_train.py --queries queries.train.jsonl --qrels qrels.train.tsv \\
        --run bm25.train.run --corpus corpus.jsonl --out train.bm25.jsonl [--depth 200 --n_sample 30 --seed 42]

Writes OUT (atomic) and OUT's stats next to it (``.stats.json``): groups written, and queries
skipped because they had no positive, no negative, or were absent from the run.
"""
import argparse
import logging
from pathlib import Path

from densir.data import read_corpus, read_qrels, read_queries
from densir.io import cli_errors, iter_run, write_json, write_jsonl
from densir.train_groups import build_train_groups, describe_stats


@cli_errors
def main(defaults=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--run", required=True, help="TREC run, e.g. BM25 or a round-1 dense run")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=int, default=200, help="sample negatives from the top DEPTH hits")
    ap.add_argument("--skip", type=int, default=0, help="leave out the top SKIP hits (false-negative guard)")
    ap.add_argument("--n_sample", type=int, default=30, help="negatives per query")
    ap.add_argument("--seed", type=int, default=42)
    if defaults:
        ap.set_defaults(**defaults)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    corpus = read_corpus(args.corpus)
    qrels = read_qrels(args.qrels, doc_ids=set(corpus))
    stats = {}
    groups = build_train_groups(read_queries(args.queries), qrels, iter_run(args.run), corpus,
                                depth=args.depth, n_sample=args.n_sample, seed=args.seed,
                                skip=args.skip, stats=stats)
    write_jsonl(args.out, groups)
    stats.update(depth=args.depth, skip=args.skip, n_sample=args.n_sample, seed=args.seed, run=args.run)
    write_json(Path(str(args.out)).with_suffix(".stats.json"), stats)
    print(f"{args.out}: {describe_stats(stats)}")


if __name__ == "__main__":
    main()
