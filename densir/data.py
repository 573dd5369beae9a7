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

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

from densir.io import InputError, iter_jsonl, require

logger = logging.getLogger(__name__)

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
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(path, lineno, f"invalid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise InputError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        return obj

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


_SKIP_ACTIONS = {
    "empty_query": "groups skipped",
    "no_positive": "groups skipped",
    "no_negative": "groups skipped (--train_n_passages 1 trains on in-batch negatives only)",
    "empty_passages": "passages dropped",
    "short_of_negatives": "missing negatives drawn with replacement",
}


class TrainDataset:
    """Train groups -> ``{"query": q, "passages": [positive, negative_1, ..]}`` items.

    Item ``k`` is a pure function of ``(seed, epoch, group)`` with ``epoch, group = divmod(k,
    len(self))``: :class:`EpochShuffleSampler` hands out ``epoch * len + group``, so the dataset
    never holds an epoch counter or a trainer, and a resumed run (or a DataLoader worker) sees
    exactly the items of an uninterrupted one.

    Per group, a RNG seeded by ``(seed, group)`` fixes once a shuffle of its negatives and a
    starting positive. Epoch ``e`` takes positive ``(start + e) mod P`` and the ``n-1`` negatives
    at positions ``e*(n-1) .. e*(n-1)+n-2`` of the shuffle, wrapping around, so every negative
    is seen within ``ceil(N / (n-1))`` epochs. A group with fewer than ``n-1`` negatives uses all
    of them and draws the rest with replacement (counted in ``stats['short_of_negatives']``).

    Bad records are counted and skipped when the group is still usable, or raise
    :class:`densir.io.InputError` naming file and line: a group without positives, with an empty
    query, or without negatives when ``n > 1`` is skipped; an empty passage is dropped; the
    counts, with the first location of each, are logged once. Title and text are joined by :func:`passage_text`; a pre-tokenized
    record (token-id lists) passes through untouched.
    """

    def __init__(self, source: TrainGroupSource, train_n_passages: int = 8, seed: int = 42):
        if train_n_passages < 1:
            raise ValueError(f"train_n_passages must be >= 1, got {train_n_passages}")
        self.source, self.n_passages, self.seed = source, train_n_passages, seed
        self.groups: list[int] = []  # record numbers of usable groups
        self.stats = {"records": 0, "groups": 0, "no_positive": 0, "empty_query": 0, "no_negative": 0,
                      "empty_passages": 0, "short_of_negatives": 0}
        first: dict[str, str] = {}
        for rec, g in source.scan():
            self.stats["records"] += 1
            reason = self._problem(g)
            if reason is not None:
                self.stats[reason] += 1
                first.setdefault(reason, "%s:%d" % source.where(rec))
                continue
            n_empty = sum(_is_empty(p) for p in g["positive_passages"] + g["negative_passages"])
            if n_empty:
                self.stats["empty_passages"] += n_empty
                first.setdefault("empty_passages", "%s:%d" % source.where(rec))
            n_neg = sum(not _is_empty(p) for p in g["negative_passages"])
            if n_neg == 0 and self.n_passages > 1:
                self.stats["no_negative"] += 1
                first.setdefault("no_negative", "%s:%d" % source.where(rec))
                continue
            if n_neg < self.n_passages - 1:
                self.stats["short_of_negatives"] += 1
                first.setdefault("short_of_negatives", "%s:%d" % source.where(rec))
            self.groups.append(rec)
        self.stats["groups"] = len(self.groups)
        for reason, action in _SKIP_ACTIONS.items():
            if self.stats[reason]:
                logger.warning("train groups: %d with %s (first at %s): %s", self.stats[reason],
                            reason.replace("_", " "), first[reason], action)
        if not self.groups:
            where = ", ".join(source.files) or source.hf_name
            raise InputError(where, None, f"no usable train group among {self.stats['records']} records "
                                          f"({self.stats})")
        logger.info("train groups: %d usable of %d records, %d passages per query", len(self.groups),
                 self.stats["records"], self.n_passages)

    @staticmethod
    def _problem(g: dict) -> str | None:
        if not g["query"] or (isinstance(g["query"], str) and not g["query"].strip()):
            return "empty_query"
        if not any(not _is_empty(p) for p in g["positive_passages"]):
            return "no_positive"
        return None

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, k: int) -> dict:
        epoch, i = divmod(int(k), len(self.groups))
        g = self.source[self.groups[i]]
        positives = [_item_text(p) for p in g["positive_passages"] if not _is_empty(p)]
        negatives = [_item_text(p) for p in g["negative_passages"] if not _is_empty(p)]
        rng = random.Random(_seed_of(self.seed, i))
        pos = positives[(rng.randrange(len(positives)) + epoch) % len(positives)]
        want = self.n_passages - 1
        if want == 0:
            chosen = []
        elif len(negatives) >= want:
            rng.shuffle(negatives)
            start = (epoch * want) % len(negatives)
            chosen = [negatives[(start + j) % len(negatives)] for j in range(want)]
        else:  # too few negatives: all of them, the rest drawn with replacement (counted at scan)
            extra = random.Random(_seed_of(self.seed, i, epoch))
            chosen = negatives + [extra.choice(negatives) for _ in range(want - len(negatives))]
        return {"query": g["query"], "passages": [pos] + chosen}


class EpochShuffleSampler:
    """Indices ``epoch * n + perm_epoch[j]``, perm_epoch a permutation seeded by ``(seed, epoch)``.

    Identical on every rank (accelerate shards its batches), repeatable for a given seed, and it
    carries the epoch to :class:`TrainDataset` inside the index. ``set_epoch`` is called by the
    trainer before each epoch.
    """

    def __init__(self, n: int, seed: int = 42, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        import torch

        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(_seed_of(self.seed, "epoch", self.epoch) % (2 ** 63))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        base = self.epoch * self.n
        return iter([base + j for j in order])


class TrainCollator:
    """Batch of :class:`TrainDataset` items -> ``{"query": tensors, "passage": tensors}``.

    Tokenizes on the fly with :func:`tokenize_batch` (fast tokenizer, dynamic padding to the
    longest item; pre-tokenized ids accepted). Passages come group by group, positive first, the
    layout :class:`densir.loss.ContrastiveLoss` expects.
    """

    def __init__(self, tokenizer, q_max_len: int = 32, p_max_len: int = 128, query_prefix: str = "",
                 passage_prefix: str = "", pad_to_multiple_of: int | None = None):
        self.tokenizer, self.q_max_len, self.p_max_len = tokenizer, q_max_len, p_max_len
        self.query_prefix, self.passage_prefix = query_prefix or "", passage_prefix or ""
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict]) -> dict:
        queries = [it["query"] for it in items]
        passages = [p for it in items for p in it["passages"]]
        return {
            "query": tokenize_batch(self.tokenizer, queries, self.q_max_len, self.query_prefix, self.pad_to_multiple_of),
            "passage": tokenize_batch(self.tokenizer, passages, self.p_max_len, self.passage_prefix,
                                      self.pad_to_multiple_of),
        }


def _item_text(p: dict):
    """A passage's model input: ``passage_text(title, text)``, or its token ids as they are."""
    text = p["text"]
    return text if isinstance(text, list) else passage_text(p.get("title") or "", text)


def _is_empty(p: dict) -> bool:
    text = p.get("text")
    if isinstance(text, list):
        return len(text) == 0
    return not (text or "").strip() and not (p.get("title") or "").strip()


def _seed_of(*parts) -> int:
    """A stable 64-bit seed from any parts (Python's hash() of str is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def train_group_source(data_args):
    """The train groups a DataArguments names: --dataset_name (HF) or --train_dir files/dirs."""
    if data_args.dataset_name:
        import datasets

        ds = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config, split=data_args.dataset_split,
                                   cache_dir=data_args.dataset_cache_dir)
        logger.info("train groups: %s (%s, %s): %d rows", data_args.dataset_name, data_args.dataset_config,
                    data_args.dataset_split, len(ds))
        return TrainGroupSource(hf_dataset=ds, hf_name=data_args.dataset_name)
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
