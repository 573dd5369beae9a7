"""Retrieve & Re-Rank as a service: ``python -m densir.serve`` (HTTP API, request batching, a search page).

:mod:`densir.serve.engine` checks requests and calls :class:`densir.search.searcher.Searcher` on
whole batches (:mod:`densir.serve.batching`); :mod:`densir.serve.app` is the FastAPI app;
``static/`` the search page at ``GET /``; ``__main__`` the CLI.
"""
