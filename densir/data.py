"""Readers of the formats exchanged between stages (see DESIGN.md), and the training datasets.

Formats (UTF-8, every id a string):
- corpus JSONL     ``{"docid", "title", "text"}``
- queries JSONL    ``{"query_id", "query"}``
- qrels            TREC ``qid 0 docid rel``; MS MARCO's ``qid<TAB>0<TAB>pid<TAB>1`` is the same
                   layout; BEIR's ``query-id<TAB>corpus-id<TAB>score`` (header line) is read too
- train groups     ``{"query_id", "query", "positive_passages": [{"docid","title","text"}],
                   "negative_passages": [...]}`` (Tevatron's public HF layout). A pre-tokenized
                   record carries token-id lists: ``query`` and each passage's ``text`` are
                   lists of ints without special tokens (title already folded into ``text``).

Every reader fails on bad input with an :class:`densir.io.InputError` naming file, line, field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from densir.io import InputError, iter_jsonl, require

TITLE_TEXT_SEPARATOR = " "


def passage_text(title, text) -> str:
    """The one way densir joins a title and a text (as sentence-transformers/MTEB do on BEIR)."""
    return f"{title}{TITLE_TEXT_SEPARATOR}{text}".strip() if title else text


def tokenize_batch(tokenizer, items: Sequence, max_len: int, prefix: str = "", pad_to_multiple_of: int | None = None):
    """The one tokenization path for queries and passages (training, encoding, re-ranking).

    ``items`` are strings, or pre-tokenized lists of token ids without special tokens. The
    prefix (e.g. ``"query: "``) is put before each string; special tokens are added, the result
    truncated to ``max_len`` and padded to the longest item. Returns tensors (``input_ids``,
    ``attention_mask``, [``token_type_ids``]).
    """
    if all(isinstance(x, str) for x in items):
        return tokenizer([prefix + x for x in items], max_length=max_len, truncation=True, padding=True,
                         pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
    head, tail = special_token_template(tokenizer)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    room = max(max_len - len(head) - len(tail), 0)
    features = []
    for x in items:
        ids = tokenizer(prefix + x, add_special_tokens=False)["input_ids"] if isinstance(x, str) else prefix_ids + list(x)
        features.append({"input_ids": head + ids[:room] + tail})
    return tokenizer.pad(features, padding=True, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")


def special_token_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one sequence (e.g. [CLS] ... [SEP])."""
    cached = getattr(tokenizer, "_densir_template", None)
    if cached is not None:
        return cached
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(inner) + 1):
        if full[i:i + len(inner)] == inner:
            template = (full[:i], full[i + len(inner):])
            break
    else:
        raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")
    tokenizer._densir_template = template
    return template


# --------------------------------------------------------------------------- corpus
def iter_corpus(path) -> Iterator[tuple[str, str, str]]:
    """Yield ``(docid, title, text)``; fails on a missing field, a duplicate id or an empty file."""
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        docid = require(obj, "docid", path, lineno)
        if not docid:
            raise InputError(path, lineno, "empty id", "docid")
        if docid in seen:
            raise InputError(path, lineno, f"duplicate docid {docid!r}", "docid")
        seen.add(docid)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise InputError(path, lineno, f"expected str, got {type(title).__name__}", "title")
        text = require(obj, "text", path, lineno, kind=(str, list))  # list: pre-tokenized ids
        yield docid, title, text
    if not seen:
        raise InputError(path, None, "corpus is empty")


def read_corpus(path) -> dict[str, tuple[str, str]]:
    """docid -> (title, text)."""
    return {docid: (title, text) for docid, title, text in iter_corpus(path)}


def read_corpus_ids(path) -> set[str]:
    return {docid for docid, _, _ in iter_corpus(path)}


# --------------------------------------------------------------------------- queries
def iter_queries(path) -> Iterator[tuple[str, str]]:
    """Yield ``(query_id, query)``; duplicate ids are an error."""
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        qid = require(obj, "query_id", path, lineno)
        if not qid:
            raise InputError(path, lineno, "empty id", "query_id")
        if qid in seen:
            raise InputError(path, lineno, f"duplicate query_id {qid!r}", "query_id")
        seen.add(qid)
        yield qid, require(obj, "query", path, lineno)


def read_queries(path) -> dict[str, str]:
    return dict(iter_queries(path))


# --------------------------------------------------------------------------- qrels
def read_qrels(path, doc_ids: set[str] | None = None) -> dict[str, dict[str, int]]:
    """qid -> {docid: relevance}. Reads TREC/MS MARCO 4-column and BEIR 3-column (with header).

    With ``doc_ids``, a judgement naming a document outside the corpus is an error.
    """
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if lineno == 1 and parts[0] in ("query-id", "qid", "query_id"):
                continue  # BEIR header
            if len(parts) == 4:
                qid, _, docid, rel = parts
            elif len(parts) == 3:
                qid, docid, rel = parts
            else:
                raise InputError(path, lineno, f"expected 'qid 0 docid rel' (or BEIR 'qid docid rel'), got {len(parts)} columns")
            try:
                rel = int(float(rel))
            except ValueError:
                raise InputError(path, lineno, f"relevance is not a number: {rel!r}", "rel") from None
            if doc_ids is not None and docid not in doc_ids:
                raise InputError(path, lineno, f"docid {docid!r} is not in the corpus", "docid")
            qrels.setdefault(qid, {})[docid] = rel
    if not qrels:
        raise InputError(path, None, "no judgements")
    return qrels


def write_qrels(path, qrels: dict[str, dict[str, int]]) -> None:
    from densir.io import atomic_write

    with atomic_write(path) as f:
        for qid, docs in qrels.items():
            for docid, rel in docs.items():
                f.write(f"{qid} 0 {docid} {rel}\n")


# --------------------------------------------------------------------------- train groups
def _check_passages(obj, field, path, lineno) -> list:
    passages = obj.get(field, [])
    if not isinstance(passages, list):
        raise InputError(path, lineno, f"expected a list, got {type(passages).__name__}", field)
    for i, p in enumerate(passages):
        if not isinstance(p, dict):
            raise InputError(path, lineno, f"item {i} is not an object", field)
        text = p.get("text")
        if text is None:
            raise InputError(path, lineno, f"item {i} has no 'text'", field)
        if not isinstance(text, (str, list)):
            raise InputError(path, lineno, f"item {i}: 'text' must be a string or token ids", field)
    return passages


def iter_train_groups(path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, group)`` with fields validated (missing negatives read as empty)."""
    for lineno, obj in iter_jsonl(path):
        if "query_id" in obj:
            obj["query_id"] = require(obj, "query_id", path, lineno)
        q = obj.get("query")
        if not isinstance(q, (str, list)):
            raise InputError(path, lineno, "missing, or neither a string nor token ids", "query")
        obj["positive_passages"] = _check_passages(obj, "positive_passages", path, lineno)
        obj["negative_passages"] = _check_passages(obj, "negative_passages", path, lineno)
        yield lineno, obj


def read_train_groups(paths) -> list[dict]:
    """Read one or many train-group files (a str/Path or a list of them) into a list."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    groups = []
    for p in paths:
        groups.extend(g for _, g in iter_train_groups(p))
    return groups
