"""The table of benchmarks/rerank_losses.sh: for every cross-encoder loss that finished, held-out
nDCG@10 and MRR@10 of re-ranking round 2's top 100, by the cross-encoder alone and fused with
round 2 (rerank.sh's RERANK_ALPHA), each with a paired t-test against round 2 on nDCG@10
(densir.evaluation.compare_runs: per-query nDCG@10, scipy.stats.ttest_rel, two-sided), and the
fusion weight swept over ``ALPHAS`` on the same held-out queries (densir.search.fusion's
interpolation, what tools/fuse_runs.py --alpha writes): each loss's best alpha and its test. The
sweep chooses on the queries it then scores, so its p is optimistic: the test split, measured
once with the chosen alpha, is the check. One JSON, one table.

    python benchmarks/rerank_table.py --out runs/rerank-losses --data runs/quality-heldout/data \\
        --losses bce listwise ... --save benchmarks/results/rerank_losses.json

Refuses a split other than the held-out one: the benchmark never reads test queries.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

from densir.evaluation import compare_runs, evaluate
from densir.formats import read_qrels
from densir.io import InputError, cli_errors, read_json, read_run, write_json
from densir.search.fusion import interpolate_runs

SPLIT = "heldout"
METRICS = ("nDCG@10", "MRR@10")
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="rerank_losses.sh's OUT (rerank-<loss>/, round2 -> first stage)")
    ap.add_argument("--data", required=True, help="the held-out split's data dir (qrels.heldout.tsv)")
    ap.add_argument("--losses", nargs="+", required=True)
    ap.add_argument("--save", required=True)
    args = ap.parse_args()
    out, data = Path(args.out), Path(args.data)
    qrels_path = data / f"qrels.{SPLIT}.tsv"
    if not qrels_path.is_file():
        raise InputError(qrels_path, None, "no held-out qrels (the benchmark scores held-out train queries only)")
    qrels = read_qrels(qrels_path)
    first = read_run(out / "round2" / f"{SPLIT}.run")
    first_metrics = read_json(out / "round2" / f"{SPLIT}.metrics.json")
    rows, missing = {}, []
    for loss in args.losses:
        d = out / f"rerank-{loss}"
        if not (d / f"{SPLIT}.metrics.json").is_file():
            missing.append(loss)
            continue
        row = {}
        for kind, run_file, metrics_file in (("alone", f"{SPLIT}.ce.run", f"{SPLIT}.ce.metrics.json"),
                                             ("fused", f"{SPLIT}.run", f"{SPLIT}.metrics.json")):
            m = read_json(d / metrics_file)
            test = compare_runs(qrels, first, read_run(d / run_file), "nDCG@10")
            row[kind] = {k: m[k] for k in METRICS} | {
                "delta_nDCG@10": test["delta"], "p": test["p"], "wins": test["wins"], "losses": test["losses"]}
        ce = read_run(d / f"{SPLIT}.ce.run")
        sweep = {a: evaluate(qrels, interpolate_runs(first, ce, a), ["nDCG@10"])["nDCG@10"] for a in ALPHAS}
        alpha = max(sweep, key=sweep.get)
        test = compare_runs(qrels, first, interpolate_runs(first, ce, alpha), "nDCG@10")
        row["sweep"] = {"nDCG@10_by_alpha": {str(a): v for a, v in sweep.items()}, "best_alpha": alpha,
                        "nDCG@10": test["b"], "delta_nDCG@10": test["delta"], "p": test["p"],
                        "wins": test["wins"], "losses": test["losses"]}
        settings = read_json(d / "model" / "densir_reranker.json") if (d / "model" / "densir_reranker.json").is_file() else {}
        row["queries"] = test["queries"]
        row["model"] = {k: settings[k] for k in ("max_len",) if k in settings}
        rows[loss] = row
    best = max(rows, key=lambda k: rows[k]["fused"]["nDCG@10"]) if rows else None
    best_swept = max(rows, key=lambda k: rows[k]["sweep"]["nDCG@10"]) if rows else None
    result = {"split": SPLIT, "first_stage": {k: first_metrics[k] for k in METRICS}, "losses": rows,
              "missing": missing, "best_fused": best,
              "best_swept": best_swept, "alphas": list(ALPHAS), "machine": platform.processor() or platform.machine()}
    write_json(args.save, result)
    print(f"held-out nDCG@10 of re-ranking round 2's top 100 ({SPLIT}, {len(qrels)} queries); "
          f"round 2 itself {first_metrics['nDCG@10']:.4f}")
    print(f"{'loss':<12} {'alone':>8} {'p':>8} {'fused':>8} {'p':>8} {'alpha':>6} {'swept':>8} {'p':>8}")
    for loss, row in rows.items():
        sw = row["sweep"]
        print(f"{loss:<12} {row['alone']['nDCG@10']:>8.4f} {row['alone']['p']:>8.3g} "
              f"{row['fused']['nDCG@10']:>8.4f} {row['fused']['p']:>8.3g} {sw['best_alpha']:>6} "
              f"{sw['nDCG@10']:>8.4f} {sw['p']:>8.3g}")
    if missing:
        print("not run yet: " + " ".join(missing))


if __name__ == "__main__":
    main()
