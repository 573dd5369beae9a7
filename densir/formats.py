"""Readers of the formats exchanged between stages (the README's "Data formats"), and the train-group source.

Formats (UTF-8, every id a string):
- corpus JSONL     ``{"docid", "title", "text"}``
- queries JSONL    ``{"query_id", "query"}``
- qrels            TREC ``qid 0 docid rel``; MS MARCO's ``qid<TAB>0<TAB>pid<TAB>1`` is the same
                   layout; BEIR's ``query-id<TAB>corpus-id<TAB>score`` (header line) is read too
- train groups     ``{"query_id", "query", "positive_passages": [{"docid","title","text"}],
                   "negative_passages": [...]}`` (Tevatron's public HF layout). A pre-tokenized
                   record carries token-id lists: ``query`` and each passage's ``text`` are
                   lists of ints without special tokens (title already folded into ``text``).
                   A passage may carry ``"relevance"`` (a graded label, > 0 on positives; e.g.
                   qrels grades) and/or ``"score"`` (a teacher's score, e.g. a cross-encoder's
                   logit from tools/score_groups.py) for listwise losses and distillation;
                   without them positives read as relevance 1, negatives as 0.

The corpus and queries readers also take an :class:`HFDataset` (``--dataset_name``: a Hugging Face
dataset in the same layout, e.g. Tevatron's ``Tevatron/msmarco-passage-corpus``); its rows are
numbered from 1 where a file's lines would be.

Every reader fails on bad input with an :class:`densir.io.InputError` naming file, line, field:
bytes that are not UTF-8 (:func:`densir.io.iter_lines`), invalid JSON, a lone surrogate
(:func:`densir.io.parse_json_line`), a missing or mistyped field, an id that is empty, holds
whitespace (TREC runs split on it) or repeats.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from densir.io import InputError, iter_columns, iter_jsonl, iter_lines, parse_finite, parse_json_line, require

logger = logging.getLogger(__name__)

TITLE_TEXT_SEPARATOR = " "
_ID_FIELDS = ("docid", "query_id")


@dataclass
class HFDataset:
    """A Hugging Face dataset (a hub name, resolved through the datasets cache and ``HF_DATASETS_OFFLINE``
    as ``datasets.load_dataset`` does, or a local dir) read where a JSONL file would be: rows are the
    file's records (Tevatron's corpus sets ``{docid, title, text}``, query sets ``{query_id, query, ...}``).
    ``str()`` names it in errors, with the 1-based row number in the place of a line."""

    name: str
    config: str | None = None
    split: str = "train"
    cache_dir: str | None = None
    _data: Any = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.name}{f'[{self.config}]' if self.config else ''} (split {self.split})"

    def load(self):
        """The rows, loaded once. A hub id is read from the Hugging Face hub cache first, as models are
        (:func:`densir.models.resolve_model_dir`): ``datasets`` alone, offline, finds only what it
        prepared itself, not a snapshot ``hf download --repo-type dataset`` put in the cache."""
        if self._data is None:
            import datasets

            where = self.name
            if not os.path.exists(self.name):
                where = _cached_dataset_snapshot(self.name) or self.name
            try:
                self._data = datasets.load_dataset(where, self.config, split=self.split, cache_dir=self.cache_dir)
            except (OSError, ValueError, ConnectionError) as e:  # not found, offline without a cache, bad split
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InputError(self, None, f"cannot load the dataset: {first}") from None
            logger.info("%s: %d rows, from %s", self, len(self._data), where)
        return self._data

    def __len__(self) -> int:
        return len(self.load())

    def rows(self) -> Iterator[tuple[int, dict]]:
        """``(row_number, record)``; integer ids (parquet often stores them so) read as strings."""
        for i, row in enumerate(self.load(), 1):
            row = dict(row)
            for key in _ID_FIELDS:
                if isinstance(row.get(key), int):
                    row[key] = str(row[key])
            yield i, row


def _cached_dataset_snapshot(name: str) -> str | None:
    """The hub cache's snapshot dir of dataset ``name`` (revision main), or None if not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(name, repo_type="dataset", local_files_only=True)
    except (HFValidationError, LocalEntryNotFoundError):
        return None


def hf_dataset_from(args, prefix: str = "") -> HFDataset | None:
    """The :class:`HFDataset` named by ``args.<prefix>dataset_name`` (with its ``_config``, ``_split``,
    ``_cache_dir`` fields), or None when no name is given."""
    name = getattr(args, f"{prefix}dataset_name")
    if not name:
        return None
    return HFDataset(name, getattr(args, f"{prefix}dataset_config"), getattr(args, f"{prefix}dataset_split"),
                     getattr(args, "dataset_cache_dir", None))


def iter_records(source) -> Iterator[tuple[int, dict]]:
    """``(line_or_row, record)`` of a JSONL file or an :class:`HFDataset`."""
    return source.rows() if isinstance(source, HFDataset) else iter_jsonl(source)


def count_records(source) -> int:
    """Records of a JSONL file (non-blank lines, counted exactly as :func:`densir.io.iter_jsonl` skips
    them, no JSON parsing) or rows of an :class:`HFDataset`."""
    if isinstance(source, HFDataset):
        return len(source)
    return sum(1 for _, line in iter_lines(source) if line.strip())


def has_records(path) -> bool:
    """Whether a JSONL file holds a non-blank line (reads up to the first one; bad bytes before it
    are an :class:`InputError`)."""
    return any(line.strip() for _, line in iter_lines(path))


def check_id(value: str, path, lineno, field: str, seen: set | None = None) -> str:
    """An id must be non-empty and hold no whitespace: runs, qrels and shard ``.ids`` split on it;
    with ``seen``, it must be new too (:func:`check_unique`)."""
    if not value:
        raise InputError(path, lineno, "empty id", field)
    if value != value.strip() or len(value.split()) != 1:
        raise InputError(path, lineno, f"id {value!r} contains whitespace (TREC runs and qrels split on it)", field)
    return value if seen is None else check_unique(value, seen, path, lineno, field)


def check_unique(value: str, seen: set, path, lineno, field: str) -> str:
    """``value``, added to ``seen``; one already in ``seen`` is an :class:`InputError` (``duplicate <field>``)."""
    if value in seen:
        raise InputError(path, lineno, f"duplicate {field} {value!r}", field)
    seen.add(value)
    return value


def passage_text(title, text) -> str:
    """The one way densir joins a title and a text (as sentence-transformers/MTEB do on BEIR)."""
    return f"{title}{TITLE_TEXT_SEPARATOR}{text}".strip() if title else text


# --------------------------------------------------------------------------- corpus
def iter_corpus(path) -> Iterator[tuple[str, str, str]]:
    """Yield ``(docid, title, text)``; fails on a missing field, a duplicate id or an empty file."""
    seen: set[str] = set()
    for lineno, obj in iter_records(path):
        docid = check_id(require(obj, "docid", path, lineno), path, lineno, "docid", seen)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise InputError(path, lineno, f"expected str, got {type(title).__name__}", "title")
        text = require(obj, "text", path, lineno, kind=(str, list))  # list: pre-tokenized ids
        yield docid, title, text
    if not seen:
        raise InputError(path, None, "corpus is empty")


def read_corpus(path) -> dict[str, tuple[str, str]]:
    """``{docid: (title, text)}`` of a corpus JSONL (README "Data formats"); bad records name file and line.

    Example: ``title, text = read_corpus("data/beir-scifact/corpus.jsonl")["4983"]``."""
    return {docid: (title, text) for docid, title, text in iter_corpus(path)}


# --------------------------------------------------------------------------- queries
def iter_queries(path) -> Iterator[tuple[str, str]]:
    """Yield ``(query_id, query)``; duplicate ids are an error."""
    seen: set[str] = set()
    for lineno, obj in iter_records(path):
        qid = check_id(require(obj, "query_id", path, lineno), path, lineno, "query_id", seen)
        yield qid, require(obj, "query", path, lineno)


def read_queries(path) -> dict[str, str]:
    """``{query_id: query}`` of a queries JSONL (README "Data formats"); bad records name file and line.

    Example: ``read_queries("data/beir-scifact/queries.test.jsonl")["1"]``."""
    return dict(iter_queries(path))


# --------------------------------------------------------------------------- qrels
def read_qrels(path, doc_ids: set[str] | None = None) -> dict[str, dict[str, int]]:
    """qid -> {docid: relevance}. Reads TREC/MS MARCO 4-column and BEIR 3-column (with header).

    With ``doc_ids``, a judgement naming a document outside the corpus is an error.
    Example: ``read_qrels("data/beir-scifact/qrels.test.tsv")["1"]`` -> ``{"31715818": 1}``.
    """
    qrels: dict[str, dict[str, int]] = {}
    for lineno, parts in iter_columns(path):
        if lineno == 1 and parts[0] in ("query-id", "qid", "query_id"):
            continue  # BEIR header
        if len(parts) == 4:
            qid, _, docid, rel = parts
        elif len(parts) == 3:
            qid, docid, rel = parts
        else:
            raise InputError(path, lineno, f"expected 'qid 0 docid rel' (or BEIR 'qid docid rel'), got {len(parts)} columns")
        rel = int(parse_finite(rel, path, lineno, "rel"))
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
        yield lineno, check_train_group(obj, path, lineno)


def check_train_group(obj: dict, path, lineno) -> dict:
    """Validate one train-group record in place (the check every train-group source goes through).

    ``query`` and ``positive_passages`` must be present; ``negative_passages`` may be missing
    (read as empty). Emptiness is not an error here: :class:`TrainDataset` counts and skips it.
    """
    if "query_id" in obj:
        obj["query_id"] = require(obj, "query_id", path, lineno)
    q = obj.get("query")
    if not isinstance(q, (str, list)):
        raise InputError(path, lineno, "missing, or neither a string nor token ids", "query")
    if "positive_passages" not in obj:
        raise InputError(path, lineno, "missing", "positive_passages")
    obj["positive_passages"] = _check_passages(obj, "positive_passages", path, lineno)
    obj["negative_passages"] = _check_passages(obj, "negative_passages", path, lineno)
    return obj


def read_train_groups(paths) -> list[dict]:
    """Read one or many train-group files (a str/Path or a list of them) into a list."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    groups = []
    for p in paths:
        groups.extend(g for _, g in iter_train_groups(p))
    return groups


# --------------------------------------------------------------------------- training
class TrainGroupSource:
    """Random access to validated train groups, wherever they live; ``where(i)`` names the record.

    JSONL files are indexed by byte offset and read lazily, one line per item, so a corpus of
    MS MARCO size (hundreds of thousands of groups with passage texts) is never held in memory.
    A Hugging Face dataset (``datasets.Dataset``, Tevatron's public layout) is indexed by row.
    """

    def __init__(self, files: Sequence | None = None, hf_dataset=None, hf_name: str | None = None):
        self.files = [str(f) for f in (files or [])]
        self.hf_dataset, self.hf_name = hf_dataset, hf_name or "dataset"
        self._index: list[tuple[int, int, int]] = []  # (file number or -1, byte offset or row, line)
        self._handles: dict = {}
        self._pid = None

    # ------------------------------------------------------------- building the index
    def scan(self) -> Iterator[tuple[int, dict]]:
        """Yield ``(record_number, validated_group)`` for every record, building the index."""
        self._index = []
        for fno, path in enumerate(self.files):
            with open(path, "rb") as f:
                offset, lineno = 0, 0
                for raw in f:
                    lineno += 1
                    start, offset = offset, offset + len(raw)
                    if not raw.strip():
                        continue
                    obj = self._parse(raw, path, lineno)
                    self._index.append((fno, start, lineno))
                    yield len(self._index) - 1, check_train_group(obj, path, lineno)
        if self.hf_dataset is not None:
            for row, obj in enumerate(self.hf_dataset):
                self._index.append((-1, row, row + 1))
                yield len(self._index) - 1, check_train_group(dict(obj), self.hf_name, row + 1)

    @staticmethod
    def _parse(raw: bytes, path, lineno):
        return parse_json_line(raw, path, lineno)

    # ------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._index)

    def where(self, i: int) -> tuple[str, int]:
        fno, _, lineno = self._index[i]
        return (self.files[fno] if fno >= 0 else self.hf_name), lineno

    def __getitem__(self, i: int) -> dict:
        fno, pos, lineno = self._index[i]
        if fno < 0:
            return check_train_group(dict(self.hf_dataset[pos]), self.hf_name, lineno)
        if self._pid != os.getpid():  # a DataLoader worker: never share a parent's file handles
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(fno)
        if f is None:
            f = self._handles[fno] = open(self.files[fno], "rb")
        f.seek(pos)
        return check_train_group(self._parse(f.readline(), self.files[fno], lineno), self.files[fno], lineno)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state


def train_group_source(data_args):
    """The train groups a DataArguments names: --dataset_name (HF) or --train_dir files/dirs."""
    if data_args.dataset_name:
        return TrainGroupSource(hf_dataset=hf_dataset_from(data_args).load(), hf_name=data_args.dataset_name)
    files = []
    for entry in data_args.train_dir:
        path = Path(entry)
        if path.is_dir():
            matched = sorted(p for p in path.glob(data_args.train_pattern) if p.is_file())
            if not matched:
                raise FileNotFoundError(f"{path}: no file matches {data_args.train_pattern!r}")
            files.extend(matched)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such train-group file or directory")
    if data_args.train_expected_files is not None and len(files) != data_args.train_expected_files:
        raise ValueError(f"--train_dir gives {len(files)} files, --train_expected_files says "
                         f"{data_args.train_expected_files}: {[str(f) for f in files]}")
    for f in files:
        logger.info("train groups: %s", f)
    return TrainGroupSource(files=files)
