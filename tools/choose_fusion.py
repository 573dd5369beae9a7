"""Choose the hybrid fusion of a dense run and BM25 on held-out TRAIN queries (densir.search.fusion_choice):
every RRF k and weighted alpha x norm scored by nDCG@10, the sweep JSON written with the best as
``chosen`` (run.sh / train_hn.sh HYBRID=auto write one a round, R/fusion.json).

    python tools/choose_fusion.py --dense round2/heldout.run --bm25 data/bm25.heldout.run \\
        --qrels data/qrels.heldout.tsv --eval_qrels data/qrels.test.tsv --out round2/fusion.json
    python tools/choose_fusion.py --fuse_args round2/fusion.json   # its tools/fuse_runs.py flags, one line

Refuses qrels of a test split, one line and nothing written: a file whose name says test, the
--eval_qrels file itself, or one that shares a query with it.
"""
import argparse
import sys

from densir.io import UsageError, cli_errors, read_json, write_json
from densir.search.fusion import NORMS
from densir.search.fusion_choice import ALPHAS, RRF_KS, choose_fusion, fuse_runs_args, render


def build_parser(doc: str = __doc__, required: bool = False) -> argparse.ArgumentParser:
    """The sweep's flags (benchmarks/hybrid_sweep.py takes the same, ``required``, and no --fuse_args)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", required=required, help="dense run of the held-out train queries")
    ap.add_argument("--bm25", required=required, help="BM25 run of the same queries")
    ap.add_argument("--qrels", required=required, help="the held-out queries' qrels (DATA_DIR/qrels.heldout.tsv)")
    ap.add_argument("--eval_qrels", nargs="*", default=[],
                    help="the qrels the pipeline evaluates on: --qrels may share no query with them")
    ap.add_argument("--out", required=required, help="write the sweep JSON here")
    ap.add_argument("--rrf_k", type=float, nargs="+", default=list(RRF_KS))
    ap.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS), help="dense weights in [0, 1]")
    ap.add_argument("--norms", nargs="+", choices=NORMS, default=list(NORMS))
    ap.add_argument("--depth", type=int, default=1000, help="hits kept per query of each fused run")
    ap.add_argument("--label", default="", help="what the dense run is (kept in the JSON)")
    return ap


@cli_errors
def main(argv=None):
    ap = build_parser()
    ap.add_argument("--fuse_args", metavar="JSON", help="print a sweep JSON's chosen setting as tools/fuse_runs.py flags")
    args = ap.parse_args(argv)
    if args.fuse_args:
        chosen = read_json(args.fuse_args).get("chosen")
        if not chosen:
            raise UsageError(f"{args.fuse_args} has no 'chosen' setting (not a tools/choose_fusion.py sweep)")
        print(" ".join(fuse_runs_args(chosen)))
        return chosen
    missing = [f"--{k}" for k in ("dense", "bm25", "qrels", "out") if not getattr(args, k)]
    if missing:
        raise UsageError(f"give {', '.join(missing)} (or --fuse_args JSON)")
    sweep = choose_fusion(args.dense, args.bm25, args.qrels, eval_qrels=args.eval_qrels, ks=args.rrf_k,
                          alphas=args.alphas, norms=args.norms, depth=args.depth)
    sweep["label"] = args.label
    print(render(sweep))
    write_json(args.out, sweep)
    print(f"-> {args.out}", file=sys.stderr)
    return sweep


if __name__ == "__main__":
    main()
