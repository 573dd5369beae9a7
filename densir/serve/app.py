"""The HTTP API (FastAPI on uvicorn) over a :class:`densir.serve.engine.Service`.

    GET  /health           200 {"status": "ready", ...} after the warm-up, 503 {"status": "warming up"} before
    POST /search           {"query": "..." | [...], "k": 10, "rerank_depth": 100, "hybrid": false, "interpolate": a}
    POST /rerank           {"query": "...", "documents": [...], "top_k": null, "return_documents": false}
    POST /embed            {"input": "..." | [...], "input_type": "query" | "passage"}
    POST /v1/embeddings    OpenAI's embeddings request/response ({"input", "model"}; "encoding_format" float|base64)
    GET  /                 the search page (static files in densir/serve/static, no CDN)
    GET  /docs, /openapi.json   the OpenAPI schema (Swagger UI)

Every error is JSON, ``{"error": "one message"}``, with a 4xx status (a refused limit names its
``--flag``), or 503 (not ready, queue full), 504 (timed out: the request leaves the queue).
With an API key (``--api_key`` or ``DENSIR_API_KEY``), the POST endpoints want
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; the page, /health and /docs stay open.
No request value is used as a file path: every file is chosen at start-up.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import threading
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from densir.serve.batching import QueueFull
from densir.serve.engine import RequestError, Service

logger = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


# --------------------------------------------------------------------------- request bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(_Body):
    query: str | list[str] = Field(description="one query, or a list (each answered in order)")
    k: int = Field(10, description="hits per query")
    rerank_depth: int | None = Field(None, description="re-rank the first stage's top N (0: do not; default: "
                                     "the server's --rerank_depth when it has a re-ranker)")
    hybrid: bool = Field(False, description="first stage: the dense run fused with BM25's (needs --bm25_index)")
    interpolate: float | None = Field(None, description="fuse first-stage and re-ranker scores, alpha in [0, 1] "
                                      "(absent: the server's --interpolate; null: the re-ranker alone)")


class RerankRequest(_Body):
    query: str
    documents: list[str]
    top_k: int | None = None
    return_documents: bool = False


class EmbedRequest(_Body):
    input: str | list[str]
    input_type: Literal["query", "passage"] = "query"


class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # user, dimensions...: accepted, not used
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"


# --------------------------------------------------------------------------- limits and errors
class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, by Content-Length or as it streams in.

    Every body is read as JSON, whatever its Content-Type says (``curl -d`` sends a form type)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("method") == "POST":
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        message = f"request body over the limit of {self.limit} bytes (--max_body_bytes)"
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"error": message}, status_code=413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, message)
            return msg

        return await self.app(scope, limited, send)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            return 400, f"malformed JSON: {e.get('ctx', {}).get('error', e.get('msg'))}"
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        # a union (str | list[str]) reports each branch: keep the first per field
        loc = [p for p in loc if not (p.startswith("list[") or p in ("str", "float", "int"))]
        where = f"field '{'.'.join(loc)}'" if loc else "body"
        text = f"{where}: {e.get('msg')}"
        if text not in parts:
            parts.append(text)
    return 422, "; ".join(parts) if parts else "invalid request"


# --------------------------------------------------------------------------- the app
def create_app(service: Service, api_key: str | None = None, title: str = "densir") -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=_warm_up, args=(service,), name="densir-warm-up", daemon=True).start()
        yield
        # uvicorn has drained the in-flight requests (SIGTERM: no new ones, the open ones answered)
        await asyncio.get_running_loop().run_in_executor(None, service.close)
        logger.info("stopped: %d batches served", service.batcher.batches)

    app = FastAPI(title=f"{title} Retrieve & Re-Rank", lifespan=lifespan,
                  description="Dense (and hybrid BM25) retrieval with cross-encoder re-ranking, batched.")
    app.add_middleware(BodyLimit, limit=service.limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request, exc):
        return _error(*_validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _on_http(request, exc):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestError)
    async def _on_request_error(request, exc):
        return _error(exc.status, exc.message)

    async def check_key(request: Request):
        if not api_key:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (send Authorization: Bearer KEY or X-API-Key: KEY)",
                                headers={"WWW-Authenticate": "Bearer"})

    async def run(make_job):
        if not service.ready.is_set():
            raise HTTPException(503, "warming up: not ready yet (GET /health)", headers={"Retry-After": "1"})
        try:
            job = make_job()
        except QueueFull as e:
            raise HTTPException(503, f"server busy: {e}", headers={"Retry-After": "1"}) from None
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(job.future), service.limits.request_timeout)
        except asyncio.TimeoutError:
            service.batcher.cancel(job)
            raise HTTPException(504, f"request timed out after {service.limits.request_timeout:g} s "
                                "(--request_timeout)") from None
        except asyncio.CancelledError:  # the client went away
            service.batcher.cancel(job)
            raise
        except RequestError:
            raise
        except ValueError as e:  # the searcher's own argument checks
            raise HTTPException(422, str(e)) from None
        result["timings_ms"]["queue"] = round(1000.0 * (job.started_at - job.queued_at), 3)
        return result

    @app.get("/health")
    async def health():
        ready = service.ready.is_set()
        body = {"status": "ready" if ready else "warming up", "queued": service.batcher.queued(),
                "batches": service.batcher.batches, "reranker": service.reranker is not None,
                "bm25": service.searcher.bm25_index is not None,
                "passages": int(sum(s.count for s in service.searcher.shards))}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.post("/search", dependencies=[Depends(check_key)])
    async def search(req: SearchRequest):
        interpolate = req.interpolate if "interpolate" in req.model_fields_set else "default"
        out = await run(lambda: service.search_job(req.query, req.k, req.rerank_depth, req.hybrid, interpolate))
        if isinstance(req.query, str):  # one query: its result at the top level
            one = out.pop("results")[0]
            out = {**one, **out}
        return out

    @app.post("/rerank", dependencies=[Depends(check_key)])
    async def rerank(req: RerankRequest):
        return await run(lambda: service.rerank_job(req.query, req.documents, req.top_k, req.return_documents))

    @app.post("/embed", dependencies=[Depends(check_key)])
    async def embed(req: EmbedRequest):
        out = await run(lambda: service.embed_job(req.input, req.input_type))
        out["embeddings"] = out["embeddings"].tolist()
        return out

    @app.post("/v1/embeddings", dependencies=[Depends(check_key)])
    async def openai_embeddings(req: OpenAIEmbeddingRequest):
        out = await run(lambda: service.embed_job(req.input, "query"))
        data = []
        for i, v in enumerate(out["embeddings"]):
            emb = base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64" \
                else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {"object": "list", "data": data, "model": req.model or service.model_name,
                "usage": {"prompt_tokens": out["tokens"], "total_tokens": out["tokens"]}}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _warm_up(service: Service) -> None:
    try:
        service.warm_up()
    except Exception:  # noqa: BLE001 - logged; /health stays "warming up"
        logger.exception("warm-up failed: the server stays not ready")
