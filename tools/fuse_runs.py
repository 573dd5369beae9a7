"""Interpolate a re-ranked run with the first-stage run it re-ranked (densir.search.fusion).

    # choose alpha on held-out TRAIN queries: one table row per alpha
    python tools/fuse_runs.py --first round2/heldout.run --rerank rerank/heldout.ce.run \\
        --alpha 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1 --qrels qrels.heldout.tsv [--save sweep.json]
    # apply the chosen alpha
    python tools/fuse_runs.py --first round2/test.run --rerank rerank/test.ce.run --alpha 0.5 --out rerank/test.run

fused = alpha * z(first-stage score) + (1 - alpha) * z(re-ranker score), z standardising each
query's scores over its re-ranked hits; alpha 0 = the re-ranker alone, 1 = the first stage alone.
"""
import argparse

from densir.io import cli_errors, read_run, write_json, write_run


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", required=True, help="the run that was re-ranked (first stage)")
    ap.add_argument("--rerank", required=True, help="the re-ranker's run over the first stage's top-k")
    ap.add_argument("--alpha", type=float, nargs="+", required=True, help="weight of the first stage, in [0, 1]")
    ap.add_argument("--out", help="write the fused run here (one --alpha only)")
    ap.add_argument("--qrels", help="score each alpha against these qrels and print a table")
    ap.add_argument("--save", help="with --qrels: write {alpha: metrics} as JSON here")
    ap.add_argument("--tag", default="densir-fused")
    args = ap.parse_args()
    if args.out and len(args.alpha) != 1:
        ap.error("--out takes exactly one --alpha")
    if not args.out and not args.qrels:
        ap.error("give --out (write the fused run) or --qrels (score each alpha), or both")
    if args.save and not args.qrels:
        ap.error("--save needs --qrels")
    from densir.search.fusion import interpolate_runs

    first, rerank = read_run(args.first), read_run(args.rerank)
    fused = {a: interpolate_runs(first, rerank, a) for a in args.alpha}
    if args.out:
        write_run(args.out, fused[args.alpha[0]], tag=args.tag)
        print(f"alpha {args.alpha[0]}: {len(fused[args.alpha[0]])} queries -> {args.out}")
    if args.qrels:
        from densir.evaluation import DEFAULT_METRICS, evaluate, format_table
        from densir.formats import read_qrels

        qrels = read_qrels(args.qrels)
        rows = {f"alpha {a:g}": evaluate(qrels, run) for a, run in fused.items()}
        print(format_table(rows, DEFAULT_METRICS))
        best = max(rows, key=lambda k: rows[k]["nDCG@10"])
        print(f"best nDCG@10: {best} ({rows[best]['nDCG@10']:.4f})")
        if args.save:
            write_json(args.save, {"first": args.first, "rerank": args.rerank, "qrels": args.qrels,
                                   "metrics": {f"{a:g}": rows[f"alpha {a:g}"] for a in args.alpha}, "best": best})


if __name__ == "__main__":
    main()
