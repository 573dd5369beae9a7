"""Each epoch's checkpoint of a round, scored on the held-out train queries against the whole corpus:
does VALIDATE=1's choice (each query against its judged passages + its BM25 top VALIDATE_DEPTH only)
keep the epoch that the full search would keep?

    python benchmarks/epoch_check.py runs/demo-scifact/round1 --data_dir data/beir-scifact \\
        --save benchmarks/results/epoch_check.json

Every ``checkpoint-N`` in ROUND/model is encoded as the demo encodes (its BACKEND/QUANTIZE, default
OpenVINO int8) at the round's token limits (--p_max_len/--q_max_len, default the demo's 128/64),
searched exactly over the corpus, and scored on
``queries.heldout.jsonl`` (densir.evaluation). The validation figures of the same epochs (the
last checkpoint's trainer_state.json) sit beside them. Only held-out train queries are read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("round_dir")
    ap.add_argument("--data_dir", default="data/beir-scifact")
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--quantize", default="int8")
    ap.add_argument("--p_max_len", type=int, default=128, help="the round's P_MAX_LEN (the demo's)")
    ap.add_argument("--q_max_len", type=int, default=64, help="the round's Q_MAX_LEN (the demo's)")
    ap.add_argument("--save", default="benchmarks/results/epoch_check.json")
    args = ap.parse_args(argv)

    from bench_common import dense_run

    from densir import evaluate, load_model, read_corpus, read_qrels, read_queries

    round_dir, data = Path(args.round_dir), Path(args.data_dir)
    checkpoints = sorted((round_dir / "model").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints:
        print(f"epoch_check: no checkpoint-* in {round_dir / 'model'}", file=sys.stderr)
        return 2
    corpus = read_corpus(data / "corpus.jsonl")
    queries, qrels = read_queries(data / "queries.heldout.jsonl"), read_qrels(data / "qrels.heldout.tsv")
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    validation = {e["step"]: e["eval_nDCG@10"] for e in state["log_history"] if "eval_nDCG@10" in e}
    name = os.path.relpath(round_dir)
    if name.startswith(".."):
        name = str(round_dir)
    result = {"round_dir": name, "backend": f"{args.backend}/{args.quantize}", "queries": len(queries),
              "max_len": {"passage": args.p_max_len, "query": args.q_max_len},
              "kept": Path(state["best_model_checkpoint"]).name if state.get("best_model_checkpoint") else None,
              "checkpoints": {}}
    for ckpt in checkpoints:
        t0 = time.perf_counter()
        model = load_model(str(ckpt), "encoder", device="cpu", backend=args.backend, quantize=args.quantize,
                           max_len=args.p_max_len)
        run = dense_run(model, corpus, queries, args.p_max_len, args.q_max_len)
        m = evaluate(qrels, run, ("nDCG@10", "MRR@10", "Recall@100"))
        step = int(ckpt.name.split("-")[1])
        result["checkpoints"][ckpt.name] = {"step": step, "validation_nDCG@10": validation.get(step),
                                            "heldout_full_corpus": {k: round(v, 4) for k, v in m.items()
                                                                    if k != "queries"},
                                            "seconds": round(time.perf_counter() - t0, 1)}
        print(ckpt.name, json.dumps(result["checkpoints"][ckpt.name]), flush=True)
    save = Path(args.save)
    doc = json.loads(save.read_text()) if save.exists() else {}
    doc[name] = result
    tmp = save.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
