"""Train a cross-encoder on SciFact BM25 groups and re-rank BM25's top-k, settings chosen on
held-out TRAIN queries (never test): the CPU-sized evidence behind the README's re-ranking row.

    python benchmarks/rerank_scifact.py --data_dir data/beir-scifact --out_dir runs/rerank-bench \\
        --model all-MiniLM-L6-v2 --configs listwise:5e-5 listwise:2e-4 --max_steps 100 --depth 20

1. ``tools/holdout_split.py``: 100 train queries held out (seed 0) -> OUT/data (train = the other 709)
2. per config LOSS:LR: ``densir.driver.train_reranker`` on OUT/data/train.bm25.jsonl, then
   ``densir.driver.rerank`` of BM25's held-out top DEPTH, scored on the held-out qrels
3. the config with the best held-out nDCG@10 re-ranks BM25's *test* top DEPTH once; scored
Writes OUT/results.json (every score and the wall time of every step) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def sh(*args) -> float:
    t = time.time()
    subprocess.run([sys.executable, *map(str, args)], check=True, cwd=HERE)
    return round(time.time() - t, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", required=True, help="get_data.sh output for beir/scifact")
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--model", required=True, help="starting encoder, e.g. all-MiniLM-L6-v2's dir")
    ap.add_argument("--configs", nargs="+", default=["listwise:5e-5", "listwise:2e-4"], help="LOSS:LR ...")
    ap.add_argument("--max_steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=4, help="queries per step")
    ap.add_argument("--n_passages", type=int, default=4)
    ap.add_argument("--max_len", type=int, default=128)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--heldout", type=int, default=100)
    args = ap.parse_args()
    data, out = Path(args.data_dir), Path(args.out_dir)
    ho = out / "data"
    results = {"settings": vars(args), "heldout": {}, "timings_s": {}}
    if not (ho / "dataset.json").exists():
        sh("tools/holdout_split.py", "--data_dir", data, "--out_dir", ho, "--n", args.heldout, "--seed", "0")

    def rerank(model, split_dir, split, name):
        run = out / f"{name}.{split}.run"
        results["timings_s"][f"rerank-{name}-{split}"] = sh(
            "-m", "densir.driver.rerank", "--model_name_or_path", model, "--run", split_dir / f"bm25.{split}.run",
            "--corpus", data / "corpus.jsonl", "--queries", split_dir / f"queries.{split}.jsonl",
            "--depth", args.depth, "--max_len", args.max_len, "--batch_size", 32, "--save_ranking_to", run)
        sh("tools/evaluate.py", split_dir / f"qrels.{split}.tsv", run, "--name", name,
           "--save", out / f"{name}.{split}.metrics.json")
        return json.loads((out / f"{name}.{split}.metrics.json").read_text())

    for cfg in args.configs:
        loss, lr = cfg.split(":")
        name = f"{loss}-{lr}"
        model = out / name
        results["timings_s"][f"train-{name}"] = sh(
            "-m", "densir.driver.train_reranker", "--model_name_or_path", args.model,
            "--train_dir", ho / "train.bm25.jsonl", "--output_dir", model, "--loss", loss,
            "--train_n_passages", args.n_passages, "--max_len", args.max_len,
            "--per_device_train_batch_size", args.batch, "--learning_rate", lr, "--max_steps", args.max_steps,
            "--warmup_steps", "0.1", "--save_steps", "100000", "--seed", "42", "--disable_tqdm", "true")
        results["heldout"][name] = rerank(model, ho, "heldout", name)
    results["heldout"]["BM25"] = json.loads((ho / "bm25.heldout.metrics.json").read_text())
    best = max(args.configs, key=lambda c: results["heldout"]["-".join(c.split(":"))]["nDCG@10"])
    best = "-".join(best.split(":"))
    results["chosen"] = best
    results["test"] = {"BM25": json.loads((data / "bm25.test.metrics.json").read_text()),
                       f"rerank {best} top-{args.depth}": rerank(out / best, data, "test", best)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    from densir.evaluation import format_table

    print("held-out train queries:\n" + format_table(results["heldout"]))
    print("test:\n" + format_table(results["test"]))
    print(json.dumps(results["timings_s"], indent=2))


if __name__ == "__main__":
    main()
