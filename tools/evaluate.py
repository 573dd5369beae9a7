"""Score a TREC run against qrels (ir_measures / pytrec_eval): print a table, optionally save JSON.

    python tools/evaluate.py QRELS RUN [--metrics MRR@10 nDCG@10 Recall@100 Recall@1000] [--save metrics.json]

Judged queries missing from the run count as 0 (trec_eval -c).
"""
import argparse

from densir.evaluation import DEFAULT_METRICS, evaluate, format_table, parse_metric
from densir.formats import read_qrels
from densir.io import InputError, UsageError, cli_errors, read_run, write_json


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("qrels")
    ap.add_argument("run")
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    ap.add_argument("--save", help="write the metrics as JSON here")
    ap.add_argument("--name", default=None, help="system name in the table (default: the run's path)")
    args = ap.parse_args()
    check_metrics(args.metrics)
    qrels, run = read_qrels(args.qrels), read_run(args.run)
    if not run:
        raise InputError(args.run, None, "run is empty")
    scores = evaluate(qrels, run, args.metrics)
    print(format_table({args.name or args.run: scores}, args.metrics))
    print(f"({scores['queries']} judged queries, {scores['queries_in_run']} in the run)")
    if args.save:
        write_json(args.save, dict(scores, run=args.run, qrels=args.qrels))


def check_metrics(names) -> None:
    """Refuse a metric name ir_measures cannot parse before any file is read."""
    for name in names:
        try:
            parse_metric(name)
        except (ValueError, NameError) as e:  # ir_measures: NameError for an unknown measure, ValueError for bad syntax
            raise UsageError(f"--metrics: unknown metric {name!r} ({e})") from None


if __name__ == "__main__":
    main()
