"""Convert public dataset releases to densir's formats (the README's "Data formats"): MS MARCO passage and BEIR.

Reads a source that is a directory, a ``.zip`` (the BEIR release) or a ``.tar.gz``
(``collectionandqueries.tar.gz``) and writes into ``out_dir``::

    corpus.jsonl                {"docid", "title", "text"}
    queries.<split>.jsonl       {"query_id", "query"}
    qrels.<split>.tsv           TREC "qid 0 docid rel"
    dataset.json                name, splits and counts; written last, so its presence means done

Ids stay the strings of the release (MS MARCO pids are kept as written, never re-numbered).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from densir.formats import check_unique, read_qrels, write_qrels
from densir.io import InputError, iter_jsonl, require, write_json, write_jsonl

logger = logging.getLogger(__name__)

MSMARCO_FILES = {
    "corpus": "collection.tsv",
    "train": ("queries.train.tsv", "qrels.train.tsv"),
    "dev": ("queries.dev.small.tsv", "qrels.dev.small.tsv"),
}


@contextlib.contextmanager
def _unpacked(source, out_dir: Path, marker: str) -> Iterator[Path]:
    """The directory holding ``marker`` inside ``source`` (:func:`locate`; an archive is extracted into
    a temp dir beside ``out_dir``, removed after); errors inside an extracted archive name
    ``archive.zip:member/path``, not the temp dir."""
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        try:
            yield locate(source, marker, tmp)
        except InputError as e:
            extracted = str(Path(tmp) / "extracted") + os.sep
            if e.path.startswith(extracted):
                e.args = (str(e).replace(extracted, f"{source}:", 1),)
                e.path = f"{source}:{e.path[len(extracted):]}"
            raise


def locate(source, marker: str, workdir) -> Path:
    """Return the directory holding ``marker`` inside ``source`` (dir, .zip or .tar[.gz]).

    Archives are extracted into ``workdir``.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    if source.is_file():
        dest = Path(workdir) / "extracted"
        dest.mkdir(parents=True, exist_ok=True)
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as z:
                z.extractall(dest)
        elif tarfile.is_tarfile(source):
            with tarfile.open(source) as t:
                t.extractall(dest, filter="data")
        else:
            raise InputError(source, None, "not a directory, .zip or .tar.gz archive")
        source = dest
    hits = sorted(source.rglob(marker), key=lambda p: len(p.parts))
    if not hits:
        raise InputError(source, None, f"no {marker} found inside")
    return hits[0].parent


# --------------------------------------------------------------------------- BEIR
def convert_beir(source, out_dir, name: str = "beir") -> dict:
    """BEIR layout (corpus.jsonl with ``_id``, queries.jsonl, qrels/<split>.tsv) -> densir files."""
    out_dir = Path(out_dir)
    with _unpacked(source, out_dir, "corpus.jsonl") as src:
        corpus_path, queries_path = src / "corpus.jsonl", src / "queries.jsonl"

        doc_ids: set[str] = set()

        def corpus_records():
            for lineno, obj in iter_jsonl(corpus_path):
                docid = check_unique(require(obj, "_id", corpus_path, lineno), doc_ids, corpus_path, lineno, "_id")
                yield {"docid": docid, "title": obj.get("title") or "",
                       "text": require(obj, "text", corpus_path, lineno)}

        n_docs = write_jsonl(out_dir / "corpus.jsonl", corpus_records())
        if n_docs == 0:
            raise InputError(corpus_path, None, "corpus is empty")

        queries = {}
        for lineno, obj in iter_jsonl(queries_path):
            queries[require(obj, "_id", queries_path, lineno)] = require(obj, "text", queries_path, lineno)

        qrels_files = sorted((src / "qrels").glob("*.tsv"))
        if not qrels_files:
            raise InputError(src / "qrels", None, "no <split>.tsv qrels files")
        splits = {}
        for qf in qrels_files:
            split = qf.stem
            qrels = read_qrels(qf, doc_ids=doc_ids)
            missing = [q for q in qrels if q not in queries]
            if missing:
                raise InputError(qf, None, f"{len(missing)} query ids have no text in {queries_path} "
                                           f"(first: {missing[0]!r})", "query-id")
            write_jsonl(out_dir / f"queries.{split}.jsonl",
                        ({"query_id": q, "query": queries[q]} for q in qrels))
            write_qrels(out_dir / f"qrels.{split}.tsv", qrels)
            splits[split] = {"queries": len(qrels), "qrels": sum(len(d) for d in qrels.values())}
    manifest = {"name": name, "format": "beir", "docs": n_docs, "splits": splits}
    write_json(out_dir / "dataset.json", manifest)
    return manifest


# --------------------------------------------------------------------------- MS MARCO
def _iter_tsv2(path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            parts = line.split("\t", 1)
            if len(parts) != 2 or not parts[0]:
                raise InputError(path, lineno, "expected 'id<TAB>text'")
            yield lineno, parts[0], parts[1]


def convert_msmarco(source, out_dir, name: str = "msmarco-passage") -> dict:
    """Official MS MARCO passage files (collection.tsv, queries.*.tsv, qrels.*.tsv) -> densir files."""
    out_dir = Path(out_dir)
    with _unpacked(source, out_dir, MSMARCO_FILES["corpus"]) as src:
        corpus_path = src / MSMARCO_FILES["corpus"]
        doc_ids: set[str] = set()

        def corpus_records():
            for lineno, pid, text in _iter_tsv2(corpus_path):
                check_unique(pid, doc_ids, corpus_path, lineno, "pid")
                yield {"docid": pid, "title": "", "text": text}

        n_docs = write_jsonl(out_dir / "corpus.jsonl", corpus_records())
        if n_docs == 0:
            raise InputError(corpus_path, None, "corpus is empty")

        splits = {}
        for split in ("train", "dev"):
            qname, rname = MSMARCO_FILES[split]
            if not (src / qname).exists():
                logger.warning("%s not found in %s: split %s skipped", qname, src, split)
                continue
            queries, seen = {}, set()
            for lineno, qid, text in _iter_tsv2(src / qname):
                queries[check_unique(qid, seen, src / qname, lineno, "qid")] = text
            qrels = read_qrels(src / rname, doc_ids=doc_ids)
            missing = [q for q in qrels if q not in queries]
            if missing:
                raise InputError(src / rname, None, f"{len(missing)} qids have no text in {qname} "
                                                    f"(first: {missing[0]!r})", "qid")
            write_jsonl(out_dir / f"queries.{split}.jsonl",
                        ({"query_id": q, "query": t} for q, t in queries.items()))
            write_qrels(out_dir / f"qrels.{split}.tsv", qrels)
            splits[split] = {"queries": len(queries), "judged_queries": len(qrels),
                             "qrels": sum(len(d) for d in qrels.values())}
    manifest = {"name": name, "format": "msmarco", "docs": n_docs, "splits": splits}
    write_json(out_dir / "dataset.json", manifest)
    return manifest
