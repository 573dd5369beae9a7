"""Choose the hybrid setting (HYBRID, HYBRID_K, HYBRID_WEIGHT, HYBRID_NORM of run.sh / train_hn.sh) on
held-out TRAIN queries: sweep reciprocal rank fusion's k and the weighted sum's dense weight alpha
under min-max and z-score normalisation, score every fusion, print one table, write the sweep JSON.

    python tools/holdout_split.py --data_dir data/beir-scifact --out_dir runs/heldout/data --n 100 --seed 0
    # a dense run of the held-out queries (e.g. benchmarks/demo_heldout.sh's round2/heldout.run) and a
    # BM25 run of the same queries (the split's bm25.heldout.run, or tools/bm25.py search at depth 1000)
    python benchmarks/hybrid_sweep.py --dense runs/heldout/round2/heldout.run --bm25 runs/heldout/data/bm25.heldout.run \\
        --qrels runs/heldout/data/qrels.heldout.tsv --out benchmarks/results/hybrid_sweep.json

The sweep JSON: the two inputs' metrics, ``rrf`` {k: metrics}, ``weighted`` {norm: {alpha: metrics}}
(alpha = the dense run's weight, BM25 gets 1 - alpha; alpha 1 is the dense run alone, 0 BM25 alone)
and ``best`` (by nDCG@10: per method and overall, as stage settings). Settings are chosen here and
then measured once on test; this script refuses qrels of a test split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from densir.evaluation import DEFAULT_METRICS, evaluate, format_table
from densir.formats import read_qrels
from densir.io import cli_errors, read_run, write_json
from densir.search.fusion import NORMS, fuse

RRF_KS = (1, 5, 10, 20, 30, 40, 60, 80, 100, 150, 200)
ALPHAS = tuple(i / 10 for i in range(11))
KEY = "nDCG@10"


@cli_errors
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", required=True, help="dense run of the held-out train queries")
    ap.add_argument("--bm25", required=True, help="BM25 run of the same queries")
    ap.add_argument("--qrels", required=True, help="the held-out queries' qrels (tools/holdout_split.py)")
    ap.add_argument("--out", required=True, help="write the sweep JSON here")
    ap.add_argument("--rrf_k", type=float, nargs="+", default=list(RRF_KS))
    ap.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS), help="dense weights in [0, 1]")
    ap.add_argument("--norms", nargs="+", choices=NORMS, default=list(NORMS))
    ap.add_argument("--depth", type=int, default=1000, help="hits kept per query of each fused run")
    ap.add_argument("--label", default="", help="what the dense run is (kept in the JSON)")
    args = ap.parse_args(argv)
    if "test" in Path(args.qrels).name:
        ap.error(f"{args.qrels} looks like a test split: choose settings on held-out train queries "
                 "(tools/holdout_split.py), never on test")
    if any(not 0.0 <= a <= 1.0 for a in args.alphas):
        ap.error("--alphas must be in [0, 1]")
    t0 = time.time()
    qrels = read_qrels(args.qrels)
    dense, bm25 = read_run(args.dense), read_run(args.bm25)
    unjudged = set(dense) - set(qrels)
    if unjudged:
        ap.error(f"{len(unjudged)} queries of {args.dense} have no qrels in {args.qrels} (another query set?)")
    sweep = sweep_fusions(dense, bm25, qrels, args.rrf_k, args.alphas, args.norms, args.depth)
    sweep.update(dense=args.dense, bm25=args.bm25, qrels=args.qrels, label=args.label, depth=args.depth,
                 dense_depth=max(map(len, dense.values())), bm25_depth=max(map(len, bm25.values())),
                 seconds=round(time.time() - t0, 1))
    print(render(sweep))
    write_json(args.out, sweep)
    print(f"-> {args.out}", file=sys.stderr)
    return sweep


def sweep_fusions(dense: dict, bm25: dict, qrels: dict, ks, alphas, norms, depth: int) -> dict:
    """Every fusion of the sweep scored on ``qrels``; ``best`` by nDCG@10 (the first of equals)."""
    inputs = {"dense": evaluate(qrels, dense), "bm25": evaluate(qrels, bm25)}
    rrf = {f"{k:g}": evaluate(qrels, fuse([dense, bm25], "rrf", rrf_k=k, depth=depth)) for k in ks}
    weighted = {norm: {f"{a:g}": evaluate(qrels, fuse([dense, bm25], "weighted", weights=(a, 1.0 - a), norm=norm,
                                                       depth=depth)) for a in alphas} for norm in norms}
    best_k = max(rrf, key=lambda k: rrf[k][KEY])
    best_w = max(((n, a) for n in weighted for a in weighted[n]), key=lambda na: weighted[na[0]][na[1]][KEY])
    best = {"rrf": {"HYBRID": "rrf", "HYBRID_K": best_k, KEY: rrf[best_k][KEY]},
            "weighted": {"HYBRID": "weighted", "HYBRID_NORM": best_w[0], "HYBRID_WEIGHT": best_w[1],
                         KEY: weighted[best_w[0]][best_w[1]][KEY]}}
    best["overall"] = max(best.values(), key=lambda b: b[KEY])
    return {"metric": KEY, "queries": inputs["dense"]["queries"], "inputs": inputs, "rrf": rrf,
            "weighted": weighted, "best": best}


def render(sweep: dict) -> str:
    rows = {"dense alone": sweep["inputs"]["dense"], "BM25 alone": sweep["inputs"]["bm25"]}
    rows.update({f"rrf k={k}": m for k, m in sweep["rrf"].items()})
    for norm, by_alpha in sweep["weighted"].items():
        rows.update({f"{norm} alpha={a}": m for a, m in by_alpha.items()})
    b = sweep["best"]
    return "\n".join([
        f"hybrid sweep on {sweep['queries']} held-out train queries ({sweep.get('label') or sweep.get('dense', '')})",
        format_table(rows, DEFAULT_METRICS),
        f"best rrf: k={b['rrf']['HYBRID_K']} ({KEY} {b['rrf'][KEY]:.4f}); best weighted: {b['weighted']['HYBRID_NORM']} "
        f"alpha={b['weighted']['HYBRID_WEIGHT']} ({KEY} {b['weighted'][KEY]:.4f})",
        "stage settings: " + " ".join(f"{k}={v}" for k, v in b["overall"].items() if k != KEY)])


if __name__ == "__main__":
    main()
