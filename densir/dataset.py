"""The training dataset both trainers share: :class:`TrainDataset` (one positive + ``n-1``
negatives per query, a pure function of ``(seed, epoch, index)``) and :class:`EpochShuffleSampler`.
"""
from __future__ import annotations

import logging
import math

from densir.formats import TrainGroupSource, passage_text
from densir.io import InputError
from densir.rng import seeded_rng, stable_seed

logger = logging.getLogger(__name__)

_SKIP_ACTIONS = {
    "empty_query": "groups skipped",
    "no_positive": "groups skipped",
    "no_negative": "groups skipped (--train_n_passages 1 trains on in-batch negatives only)",
    "empty_passages": "passages dropped",
    "short_of_negatives": "missing negatives drawn with replacement",
}


class TrainDataset:
    """Train groups -> ``{"query": q, "passages": [positive, negative_1, ..], "relevance": [..],
    "score": [..], "query_id": qid, "docids": [..], "where": (file, line)}`` items.

    ``relevance``, ``score`` and ``docids`` run beside ``passages``: each passage's graded label
    (its ``"relevance"`` in the group, else 1 for a positive and 0 for a negative, so Tevatron's
    layout reads as binary labels), its teacher score (its ``"score"``, else None) and its
    ``"docid"`` (else None); ``query_id`` (else None) and ``where`` (the group's record) name the
    group for error messages. The bi-encoder reads ``query`` and ``passages`` only; the
    re-ranker's collator builds its relevance and teacher tensors from the rest. A
    ``"relevance"`` or ``"score"`` that is not a finite number, or a positive's relevance that is
    not > 0, raises an :class:`densir.io.InputError` at the scan.

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
            _check_labels(g, *source.where(rec))
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
        positives = [p for p in g["positive_passages"] if not _is_empty(p)]
        negatives = [p for p in g["negative_passages"] if not _is_empty(p)]
        rng = seeded_rng(self.seed, i)
        pos = positives[(rng.randrange(len(positives)) + epoch) % len(positives)]
        want = self.n_passages - 1
        if want == 0:
            chosen = []
        elif len(negatives) >= want:
            rng.shuffle(negatives)
            start = (epoch * want) % len(negatives)
            chosen = [negatives[(start + j) % len(negatives)] for j in range(want)]
        else:  # too few negatives: all of them, the rest drawn with replacement (counted at scan)
            extra = seeded_rng(self.seed, i, epoch)
            chosen = negatives + [extra.choice(negatives) for _ in range(want - len(negatives))]
        passages = [pos] + chosen
        relevance = [_label(p, "relevance", 1.0) for p in passages[:1]] + \
                    [_label(p, "relevance", 0.0) for p in passages[1:]]
        return {"query": g["query"], "passages": [passage_input(p) for p in passages], "relevance": relevance,
                "score": [_label(p, "score", None) for p in passages], "query_id": g.get("query_id"),
                "docids": [p.get("docid") for p in passages], "where": self.source.where(self.groups[i])}


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
            g.manual_seed(stable_seed(self.seed, "epoch", self.epoch) % (2 ** 63))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        base = self.epoch * self.n
        return iter([base + j for j in order])


def passage_input(p: dict):
    """A train-group passage's model input: ``passage_text(title, text)``, or its token ids as they are."""
    text = p["text"]
    return text if isinstance(text, list) else passage_text(p.get("title") or "", text)


def _label(p: dict, field: str, default):
    """A passage's ``relevance``/``score`` as a float (checked at scan), or ``default`` when absent
    (None too: a Hugging Face dataset fills a field some rows lack with None)."""
    value = p.get(field)
    return default if value is None else float(value)


def _check_labels(g: dict, path, lineno) -> None:
    for field in ("positive_passages", "negative_passages"):
        for j, p in enumerate(g[field]):
            for key in ("relevance", "score"):
                value = p.get(key)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise InputError(path, lineno, f"item {j} ({p.get('docid')!r}): {key!r} must be a finite "
                                                   f"number, got {value!r}", field)
            if field == "positive_passages" and p.get("relevance") is not None and p["relevance"] <= 0:
                raise InputError(path, lineno, f"item {j} ({p.get('docid')!r}): a positive's 'relevance' must be "
                                               f"> 0, got {p['relevance']!r} (list it under negative_passages)", field)


def _is_empty(p: dict) -> bool:
    text = p.get("text")
    if isinstance(text, list):
        return len(text) == 0
    return not (text or "").strip() and not (p.get("title") or "").strip()
