"""Fuse runs (densir.search.fusion): a hybrid of any runs, or a re-ranker with its first stage.

Hybrid: reciprocal rank fusion or a weighted sum of per-query normalised scores of two or more runs
(a document missing from a run counts as absent: no reciprocal rank, the run's lowest normalised
score), the top --depth of each query written as a TREC run:

    python tools/fuse_runs.py --runs round2/test.run data/bm25.test.run --method rrf --rrf_k 60 \\
        --depth 1000 --out round2/test.hybrid.run
    python tools/fuse_runs.py --runs dense.run bm25.run --method weighted --weights 0.6 0.4 --norm zscore \\
        --out hybrid.run [--qrels qrels.tsv]      # with --qrels: also a table of the inputs and the fusion

Re-ranker + first stage, fused = alpha * z(first-stage score) + (1 - alpha) * z(re-ranker score), z
standardising each query's scores over its re-ranked hits (alpha 0 = the re-ranker alone, 1 = the
first stage alone):

    # choose alpha on held-out TRAIN queries: one table row per alpha, the sweep as JSON
    python tools/fuse_runs.py --first round2/heldout.run --rerank rerank/heldout.ce.run \\
        --alpha 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1 --qrels qrels.heldout.tsv --sweep sweep.json
    # apply the chosen alpha
    python tools/fuse_runs.py --first round2/test.run --rerank rerank/test.ce.run --alpha 0.5 --out rerank/test.run

The hybrid weights and RRF k are swept on held-out train queries by benchmarks/hybrid_sweep.py.
"""
import argparse

from densir.io import InputError, cli_errors, read_run, write_json, write_run


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hy = ap.add_argument_group("hybrid of any runs")
    hy.add_argument("--runs", nargs="+", metavar="RUN", help="two or more TREC runs to fuse")
    hy.add_argument("--method", choices=("rrf", "weighted"), default="rrf")
    hy.add_argument("--rrf_k", type=float, default=60.0, help="RRF: 1 / (k + rank)  (default 60)")
    hy.add_argument("--weights", type=float, nargs="+", help="weighted: one weight per run (default: equal)")
    hy.add_argument("--norm", choices=("minmax", "zscore"), default="minmax",
                    help="weighted: per-query normalisation of each run's scores (default minmax)")
    hy.add_argument("--depth", type=int, default=1000, help="hits kept per query of the fused run (default 1000)")
    rr = ap.add_argument_group("re-ranker + its first stage")
    rr.add_argument("--first", help="the run that was re-ranked (first stage)")
    rr.add_argument("--rerank", help="the re-ranker's run over the first stage's top-k")
    rr.add_argument("--alpha", type=float, nargs="+", help="weight of the first stage, in [0, 1]")
    ap.add_argument("--out", help="write the fused run here (re-ranker mode: one --alpha only)")
    ap.add_argument("--qrels", help="score the fused run(s) against these qrels and print a table")
    ap.add_argument("--sweep", "--save", dest="save", metavar="JSON", help="with --qrels: write the metrics as JSON here")
    ap.add_argument("--tag", default=None, help="run tag (default densir-hybrid / densir-fused)")
    args = ap.parse_args()
    if bool(args.runs) == bool(args.first or args.rerank):
        ap.error("give --runs (a hybrid) or --first and --rerank (re-ranker + first stage), not both")
    if not args.out and not args.qrels:
        ap.error("give --out (write the fused run) or --qrels (score it), or both")
    if args.save and not args.qrels:
        ap.error("--sweep needs --qrels")
    if args.runs:
        hybrid(ap, args)
    else:
        rerank_interpolation(ap, args)


def hybrid(ap, args):
    from densir.search.fusion import duplicate_hit, fuse

    if len(args.runs) < 2:
        ap.error("--runs takes two or more runs")
    if args.alpha:
        ap.error("--alpha belongs to --first/--rerank; a hybrid takes --weights")
    if args.weights is not None:
        if args.method != "weighted":
            ap.error("--weights needs --method weighted")
        if len(args.weights) != len(args.runs):
            ap.error(f"--weights takes one weight per run: {len(args.weights)} for {len(args.runs)} runs")
        if any(w < 0 for w in args.weights) or not any(args.weights):
            ap.error("--weights must be >= 0 and not all 0")
    if args.rrf_k < 0:
        ap.error("--rrf_k must be >= 0")
    if args.depth < 1:
        ap.error("--depth must be >= 1")
    runs = [read_nonempty_run(path) for path in args.runs]
    for path, run in zip(args.runs, runs):
        dup = duplicate_hit(run)
        if dup:
            raise InputError(path, None, f"query {dup[0]!r} lists docid {dup[1]!r} twice")
    fused = fuse(runs, args.method, rrf_k=args.rrf_k, weights=args.weights, norm=args.norm, depth=args.depth)
    setting = describe(args.method, args.rrf_k, args.weights, args.norm)
    if args.out:
        write_run(args.out, fused, tag=args.tag or "densir-hybrid")
        print(f"{setting}: {len(fused)} queries -> {args.out}")
    if args.qrels:
        from densir.evaluation import DEFAULT_METRICS, evaluate, format_table
        from densir.formats import read_qrels

        qrels = read_qrels(args.qrels)
        rows = {path: evaluate(qrels, run) for path, run in zip(args.runs, runs)}
        rows[setting] = evaluate(qrels, fused)
        print(format_table(rows, DEFAULT_METRICS))
        if args.save:
            write_json(args.save, {"runs": args.runs, "qrels": args.qrels, "method": args.method, "setting": setting,
                                   "metrics": rows})


def read_nonempty_run(path) -> dict:
    run = read_run(path)
    if not run:
        raise InputError(path, None, "the run is empty: no query to fuse")
    return run


def describe(method, rrf_k, weights, norm) -> str:
    """A fusion setting in one short line (the table row, the log)."""
    if method == "rrf":
        return f"rrf k={rrf_k:g}"
    w = "equal" if weights is None else " ".join(f"{x:g}" for x in weights)
    return f"weighted {norm} w={w}"


def rerank_interpolation(ap, args):
    if not (args.first and args.rerank and args.alpha):
        ap.error("the re-ranker mode takes --first, --rerank and --alpha")
    if args.out and len(args.alpha) != 1:
        ap.error("--out takes exactly one --alpha")
    from densir.search.fusion import interpolate_runs

    first, rerank = read_nonempty_run(args.first), read_nonempty_run(args.rerank)
    for qid in rerank:
        if qid not in first:
            raise InputError.in_run(args.rerank, qid, f"query {qid!r} of the re-ranked run is not in the first-stage "
                                    f"run {args.first}", "qid")
    fused = {a: interpolate_runs(first, rerank, a) for a in args.alpha}
    if args.out:
        write_run(args.out, fused[args.alpha[0]], tag=args.tag or "densir-fused")
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
