"""benchmarks/dl19_table.py — the table of benchmarks/dl19_check.sh: every row's dev metrics -> --save.

Rows: BM25; run.sh's untrained all-MiniLM-L6-v2 and round-1 model trained on the pool (and their hybrids,
as run.sh wrote them under --out/trained); the SciFact round-2 model zero-shot, encoded as the demo encodes
(the stage settings BACKEND, QUANTIZE, P_MAX_LEN, Q_MAX_LEN from the environment), exact search, and its
hybrid fused as run.sh fuses (HYBRID_WEIGHT, HYBRID_NORM). Each row also gets DL19's own measure, nDCG@10
on the graded (0-3) judgements of the same queries (the pool's qrels.dev.graded.txt).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench_common import dense_run, environment

from densir import evaluate, fuse, load_model, read_corpus, read_qrels, read_queries, read_run

KEYS = ("nDCG@10", "MRR@10", "Recall@100")


def metrics(d: dict) -> dict:
    return {k: round(d[k], 4) for k in KEYS} | {"queries": d.get("queries")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="get_data.sh's DATA_DIR of the pool")
    ap.add_argument("--out", type=Path, required=True, help="dl19_check.sh's OUT (run.sh's under OUT/trained)")
    ap.add_argument("--save", type=Path, required=True, help="the JSON to write")
    ap.add_argument("--scifact_model", required=True, help="a SciFact round-2 model")
    ap.add_argument("--pool", type=Path, required=True, help="../shared/data/msmarco-dl19-mini")
    args = ap.parse_args(argv)
    data, out, env = args.data, args.out, os.environ
    # run.sh's work (its timings.tsv: the steps that did it, whichever run of dl19_check.sh did them)
    seconds = sum(int(line.split("\t")[2]) for line in open(out / "trained/timings.tsv") if line.strip())
    graded = read_qrels(args.pool / "qrels.dev.graded.txt")

    def graded_ndcg(run) -> float:
        return round(evaluate(graded, run, ["nDCG@10"])["nDCG@10"], 4)

    def saved(metrics_path, run_path) -> dict:
        return metrics(json.loads(Path(metrics_path).read_text())) | {"graded_nDCG@10": graded_ndcg(read_run(run_path))}

    rows = {"bm25": saved(data / "bm25.dev.metrics.json", data / "bm25.dev.run")}
    for name, path in [("minilm_zero_shot", "trained/zeroshot"), ("trained_round1", "trained/round1")]:
        for suffix, split in (("", "dev"), ("_hybrid", "dev.hybrid")):
            rows[name + suffix] = saved(out / path / f"{split}.metrics.json", out / path / f"{split}.run")
    # the SciFact model, zero-shot here: encoded as the demo encodes, exact search, fused as run.sh fuses
    qrels = read_qrels(data / "qrels.dev.tsv")
    p_max_len, q_max_len = int(env["P_MAX_LEN"]), int(env["Q_MAX_LEN"])
    model = load_model(args.scifact_model, "encoder", device="cpu", backend=env["BACKEND"],
                       quantize=env["QUANTIZE"], max_len=p_max_len)
    run = dense_run(model, read_corpus(data / "corpus.jsonl"), read_queries(data / "queries.dev.jsonl"),
                    p_max_len, q_max_len)
    w = float(env["HYBRID_WEIGHT"])
    hybrid = fuse([run, read_run(data / "bm25.dev.run")], "weighted", weights=(w, 1 - w),
                  norm=env["HYBRID_NORM"], depth=1000)
    for name, r in (("scifact_transfer", run), ("scifact_transfer_hybrid", hybrid)):
        rows[name] = metrics(evaluate(qrels, r, KEYS)) | {"graded_nDCG@10": graded_ndcg(r)}
    doc = {"environment": environment(os.cpu_count()), "scifact_model": args.scifact_model, "seconds": seconds,
           "train_queries": sum(1 for _ in open(data / "queries.train.jsonl")),
           "train_steps": max(int(p.name.split("-")[1]) for p in (out / "trained/round1/model").glob("checkpoint-*")),
           "rows": rows}
    tmp = args.save.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(args.save)
    print(f"{'DL19 pool, dev (20 queries)':28s} {'nDCG@10':>8s} {'MRR@10':>8s} {'R@100':>8s} {'graded nDCG@10':>15s}")
    for name, r in rows.items():
        print(f"{name:28s} {r['nDCG@10']:8.4f} {r['MRR@10']:8.4f} {r['Recall@100']:8.4f} {r['graded_nDCG@10']:15.4f}")


if __name__ == "__main__":
    main()
