"""Serve Retrieve & Re-Rank over HTTP: ``python -m densir.serve``.

    python -m densir.serve --index OUT_DIR/round2 [--bm25_index DATA_DIR/bm25_index] \\
        [--reranker OUT_DIR/rerank] [--rerank_depth 100] [--interpolate ALPHA] \\
        [--backend openvino --quantize int8] [--host 127.0.0.1] [--port 8000] [--api_key KEY]

Loads everything once (the round's encoder and shards, the corpus texts, the BM25 index, the
re-ranker; see :class:`densir.search.searcher.Searcher`), starts uvicorn, warms the models up, and
then answers (``GET /health`` says ``ready``). The endpoints, the page and the limits:
:mod:`densir.serve.app`; the batching: :mod:`densir.serve.batching`. Binds 127.0.0.1 unless
``--host`` says otherwise. SIGTERM (or Ctrl-C) stops taking connections, answers the requests in
flight, and exits 0. Bad flags or a bad index end with one line ``error: ...`` and exit status 1
(2 for flags), before the port is bound.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from densir.checks import at_least, between, parse_checked, positive
from densir.io import UsageError, cli_errors


def build_parser() -> argparse.ArgumentParser:
    from densir.serve.engine import Limits

    ap = argparse.ArgumentParser(prog="python -m densir.serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="a round directory of the pipeline, e.g. OUT_DIR/round2")
    ap.add_argument("--corpus", help="corpus JSONL (default: the path the shards were encoded from)")
    ap.add_argument("--bm25_index", help="get_data.sh's DATA_DIR/bm25_index: enables hybrid search")
    ap.add_argument("--reranker", help="re-ranker dir (rerank.sh's OUT_DIR/rerank or its model/)")
    ap.add_argument("--rerank_depth", type=at_least(1), default=100, help="re-rank the first stage's top N by default")
    ap.add_argument("--interpolate", type=between(0, 1), help="default ALPHA: fuse first-stage and re-ranker scores "
                    "(rerank.sh's RERANK_ALPHA); default: the re-ranker alone")
    ap.add_argument("--depth", type=at_least(1), default=100, help="first-stage depth (run.sh's EVAL_DEPTH)")
    ap.add_argument("--hybrid", default="rrf", choices=("rrf", "weighted"), help="hybrid fusion (run.sh's HYBRID)")
    ap.add_argument("--hybrid_k", type=float, default=60.0, help="RRF constant (HYBRID_K)")
    ap.add_argument("--hybrid_weight", type=between(0, 1), default=0.5, help="weighted: the dense run's weight (HYBRID_WEIGHT)")
    ap.add_argument("--hybrid_norm", default="minmax", choices=("minmax", "zscore"), help="weighted (HYBRID_NORM)")
    ap.add_argument("--bm25_depth", type=at_least(1), default=1000, help="BM25 hits fused (get_data.sh's EVAL_DEPTH)")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx", "openvino"),
                    help="the re-ranker's runtime (the encoder runs as its shards were made)")
    ap.add_argument("--quantize", default="none", choices=("none", "int8"), help="the re-ranker's quantization")
    ap.add_argument("--backend_recipe", help="a recipe of densir.backends.RECIPES for the re-ranker")
    ap.add_argument("--device", help="cuda | cpu (default: cuda when available)")
    ap.add_argument("--encode_batch", type=at_least(1), default=128, help="queries per encoder forward")
    ap.add_argument("--rerank_batch", type=at_least(1), default=64, help="pairs per cross-encoder forward")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=between(1, 65535, kind=int), default=8000, help="port to bind")
    ap.add_argument("--api_key", default=None, help="require this key (default: $DENSIR_API_KEY, else none)")
    ap.add_argument("--drain_seconds", type=positive(), default=60.0,
                    help="on SIGTERM, wait this long for the requests in flight before closing them")
    g = ap.add_argument_group("batching")
    g.add_argument("--max_batch", type=at_least(1), default=64, help="texts (queries) in one batch")
    g.add_argument("--max_wait_ms", type=at_least(0, float), default=5.0, help="wait this long for a batch to fill")
    g.add_argument("--max_queue", type=at_least(1), default=256, help="requests waiting; more get 503")
    g = ap.add_argument_group("limits of one request (each refused with a 4xx that names its flag)")
    for name, value in vars(Limits()).items():
        g.add_argument(f"--{name}", type=type(value), default=value)
    return ap


@cli_errors
def main(argv=None) -> None:
    ap = build_parser()
    args = parse_checked(ap, argv)  # every range before anything loads
    from densir.serve.engine import Limits

    limits = Limits(**{name: getattr(args, name) for name in vars(Limits())})
    try:
        limits.check()
    except ValueError as e:
        ap.error(str(e))
    if args.interpolate is not None and not args.reranker:
        ap.error("--interpolate needs --reranker")
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bar per BM25 search in the log
    api_key = args.api_key if args.api_key is not None else os.environ.get("DENSIR_API_KEY") or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    import uvicorn

    from densir.loading import load_reranker
    from densir.serve.app import create_app
    from densir.serve.engine import Service, TimedSearcher

    if args.bm25_index:  # the JVM (started by the first BM25 search) must leave SIGTERM to uvicorn's drain
        import jnius_config

        if not jnius_config.vm_running:
            jnius_config.add_options("-Xrs")
    reranker = None
    if args.reranker:
        try:
            reranker = load_reranker(args.reranker, device=args.device, batch_size=args.rerank_batch,
                                     backend=args.backend, quantize=args.quantize, recipe=args.backend_recipe)
        except ValueError as e:  # an unknown recipe, a backend that does not go with the quantization
            if type(e) is ValueError:
                raise UsageError(str(e)) from None
            raise
    elif args.backend != "torch" or args.quantize != "none":
        ap.error("--backend/--quantize choose the re-ranker's runtime: they need --reranker")
    searcher = TimedSearcher.from_run_dir(args.index, corpus=args.corpus, reranker=reranker,
                                          bm25_index=args.bm25_index, device=args.device,
                                          batch_size=args.encode_batch)
    if args.bm25_index:  # the JVM starts here, in the main thread, before uvicorn takes SIGTERM over
        searcher.retrieve(["start"], 1, "bm25")
    searcher.hybrid_fusion = {"method": args.hybrid, "rrf_k": args.hybrid_k, "norm": args.hybrid_norm,
                              "weights": [args.hybrid_weight, 1.0 - args.hybrid_weight],
                              "bm25_depth": args.bm25_depth}
    service = Service(searcher, limits, depth=args.depth, rerank_depth=args.rerank_depth,
                      interpolate=args.interpolate, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                      max_queue=args.max_queue, model_name=str(searcher.shards[0].meta.get("model") or args.index))
    app = create_app(service, api_key=api_key)
    logging.getLogger(__name__).info("serving %s on http://%s:%d/%s", args.index, args.host, args.port,
                                     " (API key required)" if api_key else "")
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again: exit 0 (130 for Ctrl-C) instead of dying by it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=args.drain_seconds,
                limit_max_requests=None)


if __name__ == "__main__":
    main()
