"""Print the metrics of several systems side by side (the table the stage scripts end with).

    python tools/metrics_table.py BM25=data/bm25.test.metrics.json round1=out/round1/test.metrics.json \\
        [--metrics MRR@10 nDCG@10 Recall@100 Recall@1000] [--save table.txt]

Each argument is NAME=PATH to a metrics JSON written by tools/evaluate.py.
"""
import argparse

from densir.evaluation import DEFAULT_METRICS, format_table
from densir.io import InputError, UsageError, atomic_write, cli_errors, read_json


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("systems", nargs="+", metavar="NAME=PATH")
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    ap.add_argument("--save", help="also write the table here")
    args = ap.parse_args()
    rows = {}
    for item in args.systems:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"expected NAME=PATH, got {item!r}")
        rows[name] = read_json(path)
        if not isinstance(rows[name], dict):
            raise InputError(path, None, f"expected a JSON object of metrics, got {type(rows[name]).__name__}")
    table = format_table(rows, args.metrics)
    print(table)
    if args.save:
        with atomic_write(args.save) as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
