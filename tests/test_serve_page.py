"""The search page of python -m densir.serve in a real headless browser: Debian's chromium, driven
by playwright (its executable_path: the builds `playwright install` downloads are not used). Type
a query, press Enter, and the page shows the hits the API returns for the same request, with
titles, marked query terms, scores, rank movement and the stage latencies. Skips, saying why,
only where chromium is not installed (make test installs it with apt-get where it can)."""
from __future__ import annotations

import os
import shutil

import pytest
from test_searcher import QUERIES, mini  # noqa: F401 - fixture
from test_serve import Server

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian's chromium is not installed (make test runs apt-get install -y chromium where it can)")
    return path


@pytest.fixture(scope="module")
def page_server(mini, tmp_path_factory):
    server = Server(["--index", mini / "round", "--reranker", mini / "rerank", "--encode_batch", 4,
                     "--rerank_batch", 8, "--device", "cpu"], tmp_path_factory.mktemp("serve-page") / "server.log")
    yield server
    assert server.stop() == 0


def test_type_a_query_press_enter_see_the_api_hits(chromium, page_server, tmp_path):
    query = QUERIES[1]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_server.url + "/")
            page.wait_for_function("document.getElementById('status').textContent.includes('passages')")
            page.fill("#q", query)
            page.press("#q", "Enter")
            page.wait_for_selector("#hits li.hit", timeout=120_000)
            shown = page.eval_on_selector_all("#hits li.hit", "els => els.map(e => e.dataset.docid)")
            titles = page.eval_on_selector_all("#hits li.hit .title", "els => els.map(e => e.firstChild.textContent)")
            marks = page.eval_on_selector_all("#hits mark", "els => els.map(e => e.textContent.toLowerCase())")
            moves = page.eval_on_selector_all("#hits .move", "els => els.map(e => e.textContent)")
            stages = page.eval_on_selector_all("#timings .stage", "els => els.map(e => e.dataset.stage)")
            status = page.text_content("#status")
            shot = tmp_path / "search-page.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("DENSIR_PAGE_SCREENSHOT"):  # a copy to look at
                shutil.copy(shot, os.environ["DENSIR_PAGE_SCREENSHOT"])
        finally:
            browser.close()
    # the same request through the API: the page's defaults (k 10, re-rank the top 100)
    api = page_server.post("/search", {"query": query, "k": 10, "rerank_depth": 100, "hybrid": False}, key=None).json()
    assert shown == [h["docid"] for h in api["hits"]] and len(shown) == 10
    assert titles == [h["title"] or "(untitled)" for h in api["hits"]]
    terms = {t for t in query.lower().split() if len(t) > 2}
    assert marks and all(any(m.startswith(t) for t in terms) for m in marks), marks  # query terms, marked
    assert len(moves) == 10 and all(m.startswith(("▲", "▼", "=")) for m in moves)
    assert {"queue", "encode", "first stage", "re-rank", "round trip"} <= set(stages)
    assert status.startswith("10 hits for")
    # offline: every request the page made went to this server (no CDN)
    assert requests and all(u.startswith(page_server.url) for u in requests), requests
    assert shot.stat().st_size > 10_000
