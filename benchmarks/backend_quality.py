"""Retrieval quality per backend: nDCG@10 (and MRR@10, Recall@100) of one model's exact search over the
whole corpus, its corpus and queries encoded by each backend through the encode stage
(:func:`densir.retriever.encode.encode_file`, so exactly what ``--backend/--quantize`` give).

    python benchmarks/backend_quality.py --model M --data_dir runs/quality-heldout/data --split heldout \\
        [--max_len 256] [--systems torch-none,openvino-int8,openvino-int8:ov-int8-static] \\
        --save benchmarks/results/backend_quality_heldout.json

A system is ``BACKEND-QUANTIZE[:RECIPE]``; calibrated recipes calibrate on the first 300 passages
of the corpus (as the encode stage does). Shards go to ``--work_dir`` and are reused by a rerun.
Settings are chosen on held-out train queries (tools/holdout_split.py); the test split is measured
once, with the settings fixed (``--split test`` says so in the JSON).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_common import environment  # noqa: E402

from densir.evaluation import evaluate  # noqa: E402
from densir.formats import read_qrels  # noqa: E402
from densir.io import cli_errors, write_json  # noqa: E402
from densir.retriever.arguments import EncodeArguments, ModelArguments  # noqa: E402
from densir.retriever.encode import encode_file  # noqa: E402
from densir.search.faiss_index import search  # noqa: E402

METRICS = ("nDCG@10", "MRR@10", "Recall@100")


@cli_errors
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data_dir", required=True, help="get_data.sh / holdout_split.py layout")
    ap.add_argument("--split", required=True)
    ap.add_argument("--max_len", type=int, default=256, help="passage tokens")
    ap.add_argument("--q_max_len", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--systems", default="torch-none,openvino-int8,openvino-int8:ov-int8-static,onnx-int8")
    ap.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "densir-backend-quality"))
    ap.add_argument("--save", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = Path(args.data_dir)
    qrels = read_qrels(data / f"qrels.{args.split}.tsv")
    results = {}
    for system in args.systems.split(","):
        backend_quantize, _, recipe = system.partition(":")
        backend, quantize = backend_quantize.split("-")
        out = Path(args.work_dir) / f"{Path(args.model).name}-{args.max_len}" / system.replace(":", "-")
        start = time.perf_counter()
        shards = {}
        for kind, src in (("corpus", data / "corpus.jsonl"), ("queries", data / f"queries.{args.split}.jsonl")):
            enc = EncodeArguments(encode_in_path=str(src), encoded_save_path=str(out / f"{kind}.{args.split}"
                                  if kind == "queries" else out / kind), encode_is_qry=kind == "queries",
                                  p_max_len=args.max_len, q_max_len=args.q_max_len,
                                  per_device_eval_batch_size=args.batch_size, backend=backend, quantize=quantize,
                                  backend_recipe=recipe or None)
            shards[kind] = encode_file(ModelArguments(model_name_or_path=args.model), enc)
        run = dict(search([shards["queries"]], [shards["corpus"]], depth=100))
        m = evaluate(qrels, run, METRICS)
        results[system] = {k: m[k] for k in METRICS} | {"queries": m["queries"], "recipe": shards["corpus"].meta[
            "backend_recipe"], "seconds": round(time.perf_counter() - start, 1)}
        print(f"{system:36} " + " ".join(f"{k} {m[k]:.4f}" for k in METRICS), flush=True)
    ref = results.get("torch-none")
    if ref:
        for r in results.values():
            r["nDCG@10_minus_torch_fp32"] = r["nDCG@10"] - ref["nDCG@10"]
    write_json(args.save, {"model": args.model, "data_dir": str(data), "split": args.split, "max_len": args.max_len,
                           "q_max_len": args.q_max_len, "machine": environment(0)["cpu"], "results": results})
    print(f"saved {args.save}")


if __name__ == "__main__":
    main()
