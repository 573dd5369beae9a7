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
then measured once on test; this script refuses qrels of a test split. The sweep is
densir.search.fusion_choice's (run.sh / train_hn.sh HYBRID=auto run it every round: tools/choose_fusion.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from densir.io import ParameterError, UsageError, cli_errors, write_json
from densir.search.fusion_choice import ALPHAS, KEY, RRF_KS, choose_fusion, render, sweep_fusions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from choose_fusion import build_parser  # noqa: E402  (the sweep's flags, declared once)

__all__ = ["ALPHAS", "KEY", "RRF_KS", "main", "render", "sweep_fusions"]


@cli_errors
def main(argv=None):
    ap = build_parser(__doc__, required=True)
    args = ap.parse_args(argv)
    t0 = time.time()
    try:  # fusion_choice's checks (test qrels, alphas, unjudged queries) as this CLI's usage errors (exit 2)
        sweep = choose_fusion(args.dense, args.bm25, args.qrels, eval_qrels=args.eval_qrels, ks=args.rrf_k,
                              alphas=args.alphas, norms=args.norms, depth=args.depth)
    except UsageError as e:
        ap.error(e.as_flags() if isinstance(e, ParameterError) else str(e))
    sweep.update(label=args.label, seconds=round(time.time() - t0, 1))
    print(render(sweep))
    write_json(args.out, sweep)
    print(f"-> {args.out}", file=sys.stderr)
    return sweep


if __name__ == "__main__":
    main()
