"""python -m densir.serve: a real server process on a free loopback port, asked over HTTP.

Fast: the batcher alone (batches, bounded queue, a cancelled request frees its slot), and a server
over tests/test_searcher.py's small round (MiniLM, a re-ranker): /embed and OpenAI's client on
/v1/embeddings, the API key from the environment, a timed-out request, SIGTERM draining a request
in flight, one-line CLI errors. Slow: a server over the SciFact slice that run.sh, train_hn.sh and
rerank.sh built (the session fixtures, no extra pipeline run): /search equals run.sh's dense and
hybrid runs and rerank.sh's runs, /rerank equals CrossEncoderReranker.rank, 64 concurrent requests each equal
the same request sent alone, and each bad request gets a 4xx with one message while the server
goes on serving. The README's serving table equals benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_searcher import (  # noqa: F401 - fixtures
    QUERIES,
    assert_same_up_to_near_ties,
    fused_tolerance,
    mini,
    rerank_round,
)

from densir.formats import read_corpus, read_queries
from densir.io import read_run
from densir.loading import load_reranker
from densir.search.searcher import Hit, Searcher
from densir.serve.batching import Batcher, QueueFull

httpx = pytest.importorskip("httpx")
KEY = "test-key-123"
START_TIMEOUT = 600  # seconds: model loading and the warm-up on a busy 2-core machine


# --------------------------------------------------------------------------- a server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m densir.serve ARGS`` on 127.0.0.1:<free port>; ready when /health says so."""

    def __init__(self, args, log: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                        **(env or {}))
        if "DENSIR_API_KEY" not in (env or {}):
            full_env.pop("DENSIR_API_KEY", None)
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "densir.serve", *map(str, args), "--port", str(self.port)],
                                     cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{log.read_text()[-5000:]}")
            try:
                r = httpx.get(self.url + "/health", timeout=5)
                if r.status_code == 200 and r.json()["status"] == "ready":
                    return
                assert r.status_code == 503 and r.json()["status"] == "warming up", r.text
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"server not ready after {START_TIMEOUT}s:\n{log.read_text()[-5000:]}")

    def post(self, path, body=None, key=KEY, headers=None):
        headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=600)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def one_message(r, status: int, *fragments: str) -> str:
    """A JSON error: the status, exactly {"error": one line}, containing each fragment."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert "\n" not in body["error"] and body["error"]
    for f in fragments:
        assert f in body["error"], (f, body["error"])
    return body["error"]


def hits_of(body) -> list[Hit]:
    return [Hit(**{k: v for k, v in h.items() if k != "first_rank"}) for h in body["hits"]]


# --------------------------------------------------------------------------- fast: the batcher
def test_batcher_batches_bounds_and_cancels():
    seen, gate = [], threading.Event()

    def handler(key, payloads):
        gate.wait(10)
        seen.append((key, list(payloads)))
        return [p * 10 if p >= 0 else ValueError(f"bad {p}") for p in payloads]

    b = Batcher({"x": handler}, max_batch=4, max_wait_ms=200, max_queue=6)
    try:
        jobs = [b.submit("x", "a" if i % 2 else "b", i) for i in range(5)]
        time.sleep(0.3)  # the worker took the first 4 (max_batch) after max_wait, and waits in the handler
        late = [b.submit("x", "a", i) for i in (5, 6)]
        queued = [b.submit("x", "a", i) for i in (7, 8, 9)]  # 6 queued behind the running batch: full
        with pytest.raises(QueueFull, match="--max_queue"):
            b.submit("x", "a", 10)
        assert b.cancel(queued[0]) and queued[0].future.cancelled()  # its slot is free at once
        extra = b.submit("x", "a", -1)  # an error for one request is that request's only
        gate.set()
        assert [j.future.result(10) for j in jobs] == [0, 10, 20, 30, 40]
        assert [j.future.result(10) for j in late + queued[1:]] == [50, 60, 80, 90]
        with pytest.raises(ValueError, match="bad -1"):
            extra.future.result(10)
        # the first batch: 4 requests (max_batch), one handler call per key, payloads in arrival order
        assert seen[:2] == [("b", [0, 2]), ("a", [1, 3])]
        assert all(len(p) <= 4 for _, p in seen) and 70 not in [x for _, p in seen for x in p]
        assert jobs[0].batch_size == 4 and jobs[0].started_at < jobs[0].queued_at + 0.15  # full: no wait
        lone = b.submit("x", "c", 1)  # alone: it waits max_wait_ms for company
        assert lone.future.result(10) == 10 and lone.started_at >= lone.queued_at + 0.19
    finally:
        gate.set()
        b.stop(10)


# --------------------------------------------------------------------------- fast: a server over a small round
@pytest.fixture(scope="module")
def small_server(mini, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-small") / "server.log"
    server = Server(["--index", mini / "round", "--reranker", mini / "rerank", "--rerank_depth", 10,
                     "--encode_batch", 4, "--rerank_batch", 8, "--max_documents", 20000,
                     "--max_body_bytes", 50_000_000, "--request_timeout", 600, "--drain_seconds", 600,
                     "--device", "cpu"],
                    log, env={"DENSIR_API_KEY": KEY})
    yield server
    server.stop()


def test_embed_and_openai_client(mini, small_server):
    searcher = Searcher.from_run_dir(mini / "round", texts=False, batch_size=4, device="cpu")
    want = searcher.encode_queries(QUERIES[:3])
    r = small_server.post("/embed", {"input": QUERIES[:3]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), want, atol=1e-5)
    # passages as the encode stage made them: the shards' vectors of those documents
    corpus = read_corpus(mini / "data" / "corpus.jsonl")
    from densir.formats import passage_text

    texts = [passage_text(*corpus["doc-1"]), passage_text(*corpus["doc-2"])]
    r = small_server.post("/embed", {"input": texts, "input_type": "passage"})
    vec = {d: v for d, v in zip(searcher.index.ids, np.concatenate([s.vectors() for s in searcher.shards]))}
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), [vec[b"doc-1"], vec[b"doc-2"]], atol=1e-4)

    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=small_server.url + "/v1", api_key=KEY)
    out = client.embeddings.create(input=QUERIES[:2], model="densir")
    assert [d.index for d in out.data] == [0, 1] and out.usage.total_tokens > 0
    np.testing.assert_allclose([d.embedding for d in out.data], want[:2], atol=1e-5)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=small_server.url + "/v1", api_key="wrong").embeddings.create(input="x", model="m")


def test_api_key_from_the_environment_and_open_pages(small_server):
    one_message(small_server.post("/search", {"query": "x"}, key=None), 401, "API key")
    one_message(small_server.post("/search", {"query": "x"}, key="nope"), 401, "API key")
    r = small_server.post("/search", {"query": "x", "k": 2}, headers={"X-API-Key": KEY}, key=None)
    assert r.status_code == 200 and len(r.json()["hits"]) == 2
    for path in ("/health", "/", "/static/app.js", "/openapi.json", "/docs"):  # open without the key
        assert httpx.get(small_server.url + path).status_code == 200, path
    schema = httpx.get(small_server.url + "/openapi.json").json()
    assert {"/search", "/rerank", "/embed", "/v1/embeddings", "/health"} <= set(schema["paths"])


def test_64_concurrent_requests_each_equal_alone_small(small_server):
    """64 clients at once on the MiniLM round (re-ranked, dense only, /rerank and /embed mixed):
    each answer equals the same request sent alone (scores to 1e-5 at every rank, the same docids
    in order up to near-ties)."""
    bodies = [("/search", {"query": QUERIES[i % 6], "k": 1 + i % 10, "rerank_depth": 10 if i % 3 else 0})
              for i in range(56)]
    bodies += [("/rerank", {"query": QUERIES[i % 6], "documents": QUERIES + [q[::-1] for q in QUERIES]})
               for i in range(4)]
    bodies += [("/embed", {"input": QUERIES[i:i + 3]}) for i in range(4)]
    alone = [small_server.post(p, b).json() for p, b in bodies]

    async def all_at_once():
        async with httpx.AsyncClient(base_url=small_server.url, timeout=600, headers={"X-API-Key": KEY},
                                     limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(client.post(p, json=b) for p, b in bodies))

    together = [r.json() for r in asyncio.run(all_at_once())]
    for (path, _), a, t in zip(bodies, alone, together):
        if path == "/search":  # equal up to near-ties (scores within 1e-5 swapped by float noise)
            assert_same_up_to_near_ties(hits_of(t), [(h["docid"], h["score"]) for h in a["hits"]])
        elif path == "/rerank":
            assert_same_up_to_near_ties([Hit(str(r["corpus_id"]), i, r["score"]) for i, r in enumerate(t["results"])],
                                        [(str(r["corpus_id"]), r["score"]) for r in a["results"]])
        else:
            np.testing.assert_allclose(t["embeddings"], a["embeddings"], atol=1e-5)
    assert max(t.get("batch_queries", 0) for t in together) > 1  # they were batched


def test_sigterm_drains_the_request_in_flight(mini, small_server):
    """SIGTERM while a large /rerank runs: it is answered in full, then the process exits 0."""
    corpus = read_corpus(mini / "data" / "corpus.jsonl")
    docs = [corpus[f"doc-{i % 60}"][1] * 3 for i in range(6000)]
    result = {}

    def call():
        result["r"] = small_server.post("/rerank", {"query": QUERIES[0], "documents": docs})

    t = threading.Thread(target=call)
    t0 = time.time()
    t.start()
    time.sleep(2.0)
    assert t.is_alive(), f"the request finished before SIGTERM: make it larger ({result['r'].text[:200]})"
    small_server.proc.send_signal(signal.SIGTERM)
    t.join(600)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert sorted(x["corpus_id"] for x in r.json()["results"]) == list(range(6000))
    assert small_server.proc.wait(120) == 0
    log = small_server.log.read_text()
    assert "Traceback" not in log and "stopped:" in log, log[-3000:]
    assert time.time() - t0 < 600
    with pytest.raises(httpx.TransportError):
        httpx.get(small_server.url + "/health", timeout=5)


def test_a_timed_out_request_frees_its_slot(mini, tmp_path):
    server = Server(["--index", mini / "round", "--request_timeout", "0.05", "--max_wait_ms", "200",
                     "--max_queue", "2", "--encode_batch", 4, "--device", "cpu"], tmp_path / "server.log")
    try:
        for _ in range(4):  # each waits 200 ms for a batch, gives up at 50 ms: 504, and its slot frees
            one_message(server.post("/search", {"query": QUERIES[0]}, key=None), 504, "timed out",
                        "--request_timeout")
        assert httpx.get(server.url + "/health").json()["queued"] == 0
    finally:
        assert server.stop() == 0


def test_a_cancelled_request_does_not_cut_short_the_next_ones_wait():
    """The batcher waits max_wait_ms from the oldest request *still queued*: a request cancelled (timed
    out) before its batch ran must not set the deadline of the one queued after it."""
    from densir.serve.batching import Batcher

    ran: list[float] = []
    batcher = Batcher({"search": lambda key, payloads: [ran.append(time.perf_counter()) or p for p in payloads]},
                      max_batch=8, max_wait_ms=200, max_queue=4)
    try:
        first = batcher.submit("search", None, "a")
        time.sleep(0.05)
        assert batcher.cancel(first) and batcher.queued() == 0
        time.sleep(0.13)  # the first one's deadline is 20 ms away
        queued_at = time.perf_counter()
        second = batcher.submit("search", None, "b")
        assert second.future.result(10) == "b"
        assert len(ran) == 1 and ran[0] - queued_at >= 0.19  # its own 200 ms, not the first one's 20
    finally:
        batcher.stop(10)


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "densir.serve", "--index", str(tmp_path / "nope")], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and "no such round directory" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "densir.serve", "--index", "x", "--max_k", "0"], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("--max_k must be > 0, got 0")


# --------------------------------------------------------------------------- slow: the SciFact slice
@pytest.fixture(scope="module")
def slice_server(bash_pipeline, slice_data, rerank_round, tmp_path_factory):
    """round2 of the slice with BM25 and rerank.sh's model, as run.sh and rerank.sh ran them."""
    out, env, _ = bash_pipeline
    rdir, settings = rerank_round
    log = tmp_path_factory.mktemp("serve-slice") / "server.log"
    server = Server(["--index", out / "round2", "--bm25_index", slice_data / "bm25_index", "--reranker", rdir,
                     "--rerank_depth", settings["RERANK_DEPTH"], "--depth", env["EVAL_DEPTH"], "--bm25_depth", 1000,
                     "--encode_batch", env["ENCODE_BATCH"], "--rerank_batch", settings["RERANK_EVAL_BATCH"],
                     "--max_queries", 400, "--max_batch", 400, "--api_key", KEY, "--max_body_bytes", 200000,
                     "--request_timeout", 900, "--device", "cpu"], log)
    yield server
    assert server.stop() == 0, log.read_text()[-5000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]


@pytest.mark.slow
def test_search_equals_run_sh_dense_and_hybrid(bash_pipeline, slice_data, slice_server):
    out, env, _ = bash_pipeline
    queries = read_queries(slice_data / "queries.test.jsonl")
    run, hybrid = read_run(out / "round2" / "test.run"), read_run(out / "round2" / "test.hybrid.run")
    corpus = read_corpus(slice_data / "corpus.jsonl")
    # every test query in one request: encoded in run.sh's batches, so its run hit for hit
    r = slice_server.post("/search", {"query": list(queries.values()), "k": 10, "rerank_depth": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["query"] for x in body["results"]] == list(queries.values())
    for qid, res in zip(queries, body["results"]):
        assert [(h["docid"], h["score"]) for h in res["hits"]] == run[qid][:10], qid
        assert [h["first_rank"] for h in res["hits"]] == list(range(1, 11))
        assert all((h["title"], h["text"]) == corpus[h["docid"]] for h in res["hits"])
    assert set(body["timings_ms"]) >= {"queue", "encode", "first_stage", "rerank", "texts", "batch"}
    # hybrid: run.sh's test.hybrid.run (its dense run fused with get_data.sh's BM25 run, RRF k=60);
    # that BM25 run drops a passage whose docid is the query's id (BEIR's --remove-query), which the
    # server, knowing no query ids, cannot: such queries are left out
    # (all the queries in one request again: the dense run's near-ties rank as in run.sh's batches)
    r = slice_server.post("/search", {"query": list(queries.values()), "k": 10, "rerank_depth": 0, "hybrid": True})
    assert r.status_code == 200, r.text
    compared = 0
    for qid, res in zip(queries, r.json()["results"]):
        if qid in corpus:
            continue
        compared += 1
        assert [h["docid"] for h in res["hits"]] == [d for d, _ in hybrid[qid][:10]], qid
        np.testing.assert_allclose([h["score"] for h in res["hits"]], [s for _, s in hybrid[qid][:10]], atol=1e-6)
    assert compared >= len(queries) // 2, compared
    # one query a request, as the page asks: run.sh's top 10 up to near-ties (a query padded alone)
    differ = 0
    for qid in list(queries)[:20]:
        r = slice_server.post("/search", {"query": queries[qid], "k": 10, "rerank_depth": 0})
        differ += assert_same_up_to_near_ties(hits_of(r.json()), run[qid])
    assert differ <= 10, differ


@pytest.mark.slow
def test_search_reranked_equals_rerank_sh(bash_pipeline, slice_data, rerank_round, slice_server):
    """As tests/test_searcher.py's test_searcher_rerank_equals_rerank_sh, through HTTP: the
    cross-encoder alone (test.ce.run) and fused by RERANK_ALPHA (test.run)."""
    out, env, _ = bash_pipeline
    rdir, settings = rerank_round
    depth, alpha = int(settings["RERANK_DEPTH"]), float(settings["RERANK_ALPHA"])
    first, ce, fused = read_run(out / "round2" / "test.run"), read_run(rdir / "test.ce.run"), read_run(rdir / "test.run")
    queries = read_queries(slice_data / "queries.test.jsonl")
    qids = list(queries)[:100]
    texts = [queries[q] for q in qids]
    alone = slice_server.post("/search", {"query": texts, "k": depth, "rerank_depth": depth}).json()["results"]
    mixed = slice_server.post("/search", {"query": texts, "k": depth, "rerank_depth": depth,
                                          "interpolate": alpha}).json()["results"]
    differ = {"ce": 0, "fused": 0, "first stage": 0}
    for qid, a, m in zip(qids, alone, mixed):
        a_hits, m_hits = hits_of(a), hits_of(m)
        if {h.docid for h in a_hits} != {d for d, _ in first[qid][:depth]}:
            differ["first stage"] += 1  # a first-stage near-tie at the cut (see test_searcher)
            continue
        differ["ce"] += assert_same_up_to_near_ties(a_hits, ce[qid])
        differ["fused"] += assert_same_up_to_near_ties(m_hits, fused[qid],
                                                       fused_tolerance(first[qid][:depth], ce[qid], alpha))
        # the first stage's rank of each hit: its score there (ranks of near-ties may swap, see above)
        assert sorted(h["first_rank"] for h in a["hits"]) == list(range(1, depth + 1))
        for h in a["hits"]:
            assert abs(first[qid][h["first_rank"] - 1][1] - h["first_score"]) <= 1e-5
    assert max(differ.values()) <= len(qids) // 10, differ


@pytest.mark.slow
def test_rerank_equals_reranker_rank(slice_data, rerank_round, slice_server):
    rdir, settings = rerank_round
    reranker = load_reranker(rdir, device="cpu", batch_size=int(settings["RERANK_EVAL_BATCH"]))
    corpus = read_corpus(slice_data / "corpus.jsonl")
    docs = [t for _, t in list(corpus.values())[:40]]
    for query in list(read_queries(slice_data / "queries.test.jsonl").values())[:3]:
        for kw in ({}, {"top_k": 5, "return_documents": True}):
            r = slice_server.post("/rerank", {"query": query, "documents": docs, **kw})
            assert r.status_code == 200, r.text
            assert r.json()["results"] == reranker.rank(query, docs, **kw)


async def _all_at_once(server, path, bodies):
    async with httpx.AsyncClient(base_url=server.url, timeout=600, headers={"Authorization": f"Bearer {KEY}"},
                                 limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post(path, json=b) for b in bodies))


@pytest.mark.slow
def test_64_concurrent_requests_each_equal_alone(slice_data, slice_server):
    """64 clients at once, batched together: each answer is the one the same request gets alone,
    up to near-ties. A query batched with others is padded with them, so its vector can move in
    the last float bit; the slice's tiny random encoder scores every passage within ~1e-5 of 32,
    so such a bit can swap two passages (the alone request's top 100 names the one swapped in)."""
    queries = list(read_queries(slice_data / "queries.test.jsonl").values())[:64]
    bodies = [{"query": q, "k": 10, "rerank_depth": 0} for q in queries]
    alone = [slice_server.post("/search", b).json() for b in bodies]
    deep = [slice_server.post("/search", dict(b, k=100)).json() for b in bodies]
    together = asyncio.run(_all_at_once(slice_server, "/search", bodies))
    assert [r.status_code for r in together] == [200] * 64
    differ = 0
    for a, d, t in zip(alone, deep, together):
        t = t.json()
        assert t["query"] == a["query"] and a["batch_queries"] == 1
        assert [h["docid"] for h in d["hits"][:10]] == [h["docid"] for h in a["hits"]]  # k only cuts
        differ += assert_same_up_to_near_ties(hits_of(t), [(h["docid"], h["score"]) for h in d["hits"]])
    assert differ <= 64, differ
    assert max(r.json()["batch_queries"] for r in together) > 1  # they were batched


@pytest.mark.slow
def test_bad_requests_get_one_message_and_the_server_goes_on(slice_server):
    s = slice_server
    ok = {"query": "cancer", "k": 3}
    cases = [
        (httpx.post(s.url + "/search", content=b'{"query": "x",', headers={"Authorization": f"Bearer {KEY}"}),
         400, ("malformed JSON",)),
        (s.post("/search", {"k": 3}), 422, ("field 'query'", "required")),
        (s.post("/search", {"query": "   "}), 422, ("query is empty",)),
        (s.post("/search", {"query": "x", "k": 101}), 422, ("k=101", "limit of 100", "--max_k")),
        (s.post("/search", {"query": "x", "k": 20}), 422, ("more than rerank_depth",)),
        (s.post("/search", {"query": "x" * 1001}), 413, ("--max_query_chars",)),
        (s.post("/search", {"query": ["x"] * 401}), 413, ("--max_queries",)),
        (s.post("/search", {"query": "x", "kk": 1}), 422, ("field 'kk'",)),
        (s.post("/search", ok, key="wrong"), 401, ("API key",)),
        (s.post("/search", ok, key=None), 401, ("API key",)),
        (s.post("/search", {"query": "x " * 150000}), 413, ("limit of 200000 bytes", "--max_body_bytes")),
        (s.post("/rerank", {"query": "x", "documents": []}), 422, ("documents",)),
        (s.post("/embed", {"input": []}), 422, ("input",)),
    ]
    for r, status, fragments in cases:
        one_message(r, status, *fragments)
        r = s.post("/search", ok)  # still serving
        assert r.status_code == 200 and len(r.json()["hits"]) == 3
    # a body streamed without Content-Length is counted as it arrives
    def chunks():
        for _ in range(30):
            yield b" " * 10000
        yield json.dumps(ok).encode()
    r = httpx.post(s.url + "/search", content=chunks(), headers={"Authorization": f"Bearer {KEY}"})
    one_message(r, 413, "--max_body_bytes")
    assert s.post("/search", ok).status_code == 200


# --------------------------------------------------------------------------- the README's table
def test_readme_serving_table_equals_the_benchmark_json():
    results = REPO / "benchmarks" / "results" / "serve_load.json"
    if not results.exists():
        pytest.fail(f"{results} is missing: run python benchmarks/serve_load.py")
    data = json.loads(results.read_text())
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Serving", 1)[1].split("\n## ", 1)[0]
    block = section.split("<!-- figures: benchmarks/results/serve_load.json -->", 1)[1].split("<!-- /figures -->")[0]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert rows, "no table rows in the README's Serving section"
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        system, mode, clients = cells[0].strip("`"), cells[1], int(cells[2])
        entry = next(e for e in data["runs"] if e["system"] == system and e["mode"] == mode and e["clients"] == clients)
        want = [f"{entry['qps']:.2f}", f"{entry['p50_ms']:.0f}", f"{entry['p95_ms']:.0f}", f"{entry['p99_ms']:.0f}",
                str(entry["errors"])]
        assert cells[3:8] == want, (line, want)
    assert re.search(r"goal", section)
