"""Paired significance test of two runs on the same qrels (densir.evaluation.compare_runs:
per-query metric, wins/losses/ties, scipy.stats.ttest_rel).

    python tools/compare_runs.py --qrels qrels.test.tsv --a round2/test.run --b rerank/test.run \\
        [--metric nDCG@10] [--save compare.json]
"""
import argparse

from densir.evaluation import compare_runs
from densir.formats import read_qrels
from densir.io import InputError, cli_errors, read_run, write_json


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--a", required=True, help="the baseline run")
    ap.add_argument("--b", required=True, help="the run compared with it")
    ap.add_argument("--metric", default="nDCG@10")
    ap.add_argument("--save", help="write the comparison as JSON here")
    args = ap.parse_args()
    qrels = read_qrels(args.qrels)
    runs = {}
    for name in ("a", "b"):
        runs[name] = read_run(getattr(args, name))
        if not runs[name]:
            raise InputError(getattr(args, name), None, "the run is empty")
    r = compare_runs(qrels, runs["a"], runs["b"], args.metric)
    r.update(a_run=args.a, b_run=args.b, qrels=args.qrels)
    print(f"{args.metric} over {r['queries']} queries: a {r['a']:.4f}, b {r['b']:.4f} (delta {r['delta']:+.4f}); "
          f"b better on {r['wins']}, worse on {r['losses']}, same on {r['ties']}; paired t-test p = {r['p']:.4g}")
    if args.save:
        write_json(args.save, r)


if __name__ == "__main__":
    main()
