"""Embedding shards: the on-disk format between encoding and search (the README's "Data formats").

A shard ``NAME`` is three files::

    NAME.npy    float32 or float16 [count, dim], memory-mappable (np.load(mmap_mode="r"))
    NAME.ids    one id a line, row i of the npy is the vector of line i
    NAME.json   model, model_fingerprint, pooling, normalize, kind (query|passage), dim, dtype,
                count, max_len, prefix, precision, shard_index, num_shards, rank, world_size

:class:`ShardWriter` fills the npy and ids under temp names and renames them to their final names
data first, ``.json`` last: a shard is complete exactly when its ``.json`` exists. An npy without
its json is a half-written shard and every reader refuses it.

Shard names. ``encode --encoded_save_path DIR/corpus`` writes ``DIR/corpus``; with
``--num_shards n`` (n > 1) shard i is ``DIR/corpus.i``; under torchrun each of W processes writes
its own piece ``<shard>.rank<r>-of-<W>``. A reader is given a name or a glob pattern over names
(``'DIR/corpus.*'``) and resolves it with :func:`resolve_shards`, which checks from the pieces'
own json that the set is whole: every shard index 0..n-1 present (or the expected count given by
the caller), every rank of every shard present, nothing half-written. No bare ``glob('*')``.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from densir.io import InputError, read_json, write_json

logger = logging.getLogger(__name__)

SUFFIXES = (".npy", ".ids", ".json")
# fields that must agree between a query shard and the passage shards it is searched against
# and with each other; backend/quantize/backend_recipe: what ran the model (densir.backends), so an int8
# or exported encode is never searched against vectors the checkpoint itself made
COMPATIBLE_FIELDS = ("model_fingerprint", "pooling", "normalize", "dim", "backend", "quantize", "backend_recipe")
# what a shard written before backends existed (or by another tool) was made with
FIELD_DEFAULTS = {"backend": "torch", "quantize": "none", "backend_recipe": "torch-fp32"}
_RANK_RE = re.compile(r"\.rank(\d+)-of-(\d+)$")


# --------------------------------------------------------------------------- names
def shard_name(save_path, shard_index: int = 0, num_shards: int = 1, rank: int = 0, world_size: int = 1) -> str:
    """The name one encode process writes: ``NAME[.i][.rank<r>-of-<W>]``."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    name = str(save_path)
    if num_shards > 1:
        name += f".{shard_index}"
    if world_size > 1:
        name += f".rank{rank}-of-{world_size}"
    return name


# --------------------------------------------------------------------------- reading
@dataclass
class EmbeddingShard:
    """One complete shard (or torchrun piece of a shard) on disk."""

    name: str
    meta: dict = field(repr=False)

    @classmethod
    def open(cls, name) -> "EmbeddingShard":
        """Open a complete shard; a half-written or inconsistent one is an :class:`InputError`."""
        name = str(name)
        json_path, npy_path, ids_path = name + ".json", name + ".npy", name + ".ids"
        if not os.path.exists(json_path):
            if os.path.exists(npy_path) or glob.glob(glob.escape(npy_path) + ".tmp-*"):
                raise InputError(npy_path, None, f"half-written embedding shard: {json_path} is missing "
                                 "(the encode job did not finish; rerun it)")
            raise InputError(json_path, None, "no such embedding shard")
        meta = read_json(json_path)
        for key in ("dim", "count", "dtype", "kind"):
            if key not in meta:
                raise InputError(json_path, None, "missing", key)
        for path in (npy_path, ids_path):
            if not os.path.exists(path):
                raise InputError(path, None, f"missing although {json_path} exists (shard damaged; re-encode it)")
        shard = cls(name, meta)
        shape, dtype = shard._npy_header()
        if shape != (meta["count"], meta["dim"]) or dtype != np.dtype(meta["dtype"]):
            raise InputError(npy_path, None, f"array is {shape} {dtype}, but {json_path} says "
                             f"({meta['count']}, {meta['dim']}) {meta['dtype']}")
        return shard

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def json_path(self) -> str:
        return self.name + ".json"

    def vectors(self) -> np.ndarray:
        """The [count, dim] array, memory-mapped read-only (nothing is loaded until sliced)."""
        return np.load(self.name + ".npy", mmap_mode="r", allow_pickle=False)

    def ids(self) -> list[str]:
        with open(self.name + ".ids", encoding="utf-8") as f:
            ids = [line.rstrip("\n") for line in f]
        if len(ids) != self.count:
            raise InputError(self.name + ".ids", None, f"{len(ids)} ids, but {self.json_path} says count={self.count}")
        return ids

    def check_compatible(self, other: "EmbeddingShard") -> None:
        """Raise unless ``other`` was encoded by the same model/pooling/normalization/dim as ``self``."""
        # the weights' fingerprint identifies the model whatever path it was loaded from; shards
        # written without one (other tools) must name the same model
        fingerprinted = bool(self.meta.get("model_fingerprint") and other.meta.get("model_fingerprint"))
        keys = COMPATIBLE_FIELDS if fingerprinted else ("model",) + COMPATIBLE_FIELDS[1:]
        for key in keys:
            default = FIELD_DEFAULTS.get(key)
            mine, theirs = self.meta.get(key, default), other.meta.get(key, default)
            if mine != theirs:
                what = "the same model" if key not in FIELD_DEFAULTS else "the same backend and quantization"
                raise InputError(other.json_path, None,
                                 f"{key}={theirs!r} (model {other.meta.get('model')!r}) does not match "
                                 f"{key}={mine!r} of {self.json_path} (model {self.meta.get('model')!r}): "
                                 f"queries and passages must be encoded by {what}", key)
        if self.meta.get("model") != other.meta.get("model"):
            logger.warning("%s names model %r, %s names %r; same weights, so searching anyway",
                           self.json_path, self.meta.get("model"), other.json_path, other.meta.get("model"))

    def _npy_header(self):
        try:
            arr = self.vectors()  # a memmap: reads the header only
        except ValueError as e:
            raise InputError(self.name + ".npy", None, f"not a readable npy array: {e}") from None
        return tuple(arr.shape), arr.dtype


def resolve_shards(spec, expected_shards: int | None = None, kind: str | None = None) -> list[EmbeddingShard]:
    """Turn a shard name or glob pattern over names into complete pieces, in (shard, rank) order.

    Refuses: nothing matched, a half-written piece, pieces that disagree on ``num_shards`` or
    ``world_size``, a missing shard index or rank, a count different from ``expected_shards``
    (shards, not torchrun pieces) and, with ``kind``, a shard of the other kind (query/passage).
    """
    spec = str(spec)
    names = _candidate_names(spec)
    if not names:
        raise InputError(spec, None, "no embedding shard matches (looked for NAME.json / NAME.npy)")
    pieces = [EmbeddingShard.open(n) for n in names]
    for p in pieces:
        if kind is not None and p.meta["kind"] != kind:
            raise InputError(p.json_path, None, f"is a {p.meta['kind']} shard, expected {kind} embeddings", "kind")
    pieces.sort(key=lambda p: (p.meta.get("shard_index", 0), p.meta.get("rank", 0)))
    _check_whole(spec, pieces, expected_shards)
    first = pieces[0]
    for p in pieces[1:]:
        first.check_compatible(p)
    return pieces


def _candidate_names(spec: str) -> list[str]:
    """Names matching ``spec``: exact name, its torchrun pieces, or a glob pattern over names."""
    if not glob.has_magic(spec):
        if os.path.exists(spec + ".json") or os.path.exists(spec + ".npy"):
            return [spec]
        spec = glob.escape(spec) + ".rank*-of-*"  # a shard written by several torchrun processes
    names = set()
    for suffix in (".json", ".npy"):
        for path in glob.glob(spec + suffix):
            names.add(path[: -len(suffix)])
    # a pattern like 'DIR/corpus.*' also matches the pieces of a shard; keep them (they are shards)
    return sorted(names)


def _check_whole(spec: str, pieces: list[EmbeddingShard], expected_shards: int | None) -> None:
    num_shards = {p.meta.get("num_shards", 1) for p in pieces}
    if len(num_shards) != 1:
        raise InputError(spec, None, f"matched shards of different splits (num_shards {sorted(num_shards)}): "
                         "a pattern must name one encoding run")
    by_shard: dict[int, list[EmbeddingShard]] = {}
    for p in pieces:
        by_shard.setdefault(p.meta.get("shard_index", 0), []).append(p)
    for index, group in by_shard.items():
        world = {p.meta.get("world_size", 1) for p in group}
        ranks = sorted(p.meta.get("rank", 0) for p in group)
        if len(world) != 1 or ranks != list(range(next(iter(world)))):
            raise InputError(spec, None, f"shard {index}: torchrun pieces {ranks} of world sizes {sorted(world)} "
                             "matched; expected ranks 0..W-1 of one run (a piece is missing or from another run)")
    total = num_shards.pop()
    if expected_shards is not None:
        if len(by_shard) != expected_shards:
            raise InputError(spec, None, f"matched {len(by_shard)} shard(s) {sorted(by_shard)}, expected {expected_shards}")
    elif glob.has_magic(spec) and sorted(by_shard) != list(range(total)):
        missing = sorted(set(range(total)) - set(by_shard))
        raise InputError(spec, None, f"the shards say num_shards={total} but shard(s) {missing} are missing "
                         "(pass --num_passage_shards to search a subset on purpose)")


# --------------------------------------------------------------------------- writing
def model_fingerprint(*modules) -> str:
    """A short hash of the encoder's weights (input embeddings + a final-layer tensor).

    Two shards are comparable when their fingerprints agree, whatever path the model was loaded from.
    """
    h = hashlib.sha1()
    for module in modules:
        params = list(module.parameters())
        for p in (params[0], params[-1]):
            t = p.detach().float().cpu().contiguous()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def is_complete(name) -> bool:
    return os.path.exists(str(name) + ".json")


class ShardWriter:
    """Write one shard row-block by row-block without holding it in memory.

    The npy is created at full size with ``np.lib.format.open_memmap`` under a temp name, then
    filled with positioned writes (so the written pages never count against the process's
    RSS); ids go to a temp file. :meth:`commit` renames npy, ids, then writes the json.
    """

    def __init__(self, name, count: int, dim: int, dtype: str, meta: dict):
        self.name = str(name)
        self.count, self.dim, self.dtype = count, dim, np.dtype(dtype)
        self.meta = dict(meta, dim=dim, count=count, dtype=self.dtype.name)
        Path(self.name).parent.mkdir(parents=True, exist_ok=True)
        base = os.path.basename(self.name)
        self._npy_tmp = _mktemp(self.name + ".npy")
        self._ids_tmp = _mktemp(self.name + ".ids")
        mm = np.lib.format.open_memmap(self._npy_tmp, mode="w+", dtype=self.dtype, shape=(count, dim))
        self._offset = mm.offset
        del mm  # only the header and the file size came from the memmap
        self._npy = open(self._npy_tmp, "r+b")
        self._ids = open(self._ids_tmp, "w", encoding="utf-8", newline="\n")
        self.rows = 0
        logger.debug("writing %s (%d x %d %s) via %s", base, count, dim, self.dtype, self._npy_tmp)

    def write(self, ids, vectors: np.ndarray) -> None:
        """Append rows (ids in the same order as the vectors)."""
        vectors = np.ascontiguousarray(vectors, dtype=self.dtype)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"got vectors {vectors.shape} for {len(ids)} ids of dim {self.dim}")
        if self.rows + len(ids) > self.count:
            raise ValueError(f"{self.name}: more than the {self.count} rows announced")
        os.pwrite(self._npy.fileno(), vectors.tobytes(), self._offset + self.rows * self.dim * self.dtype.itemsize)
        for i in ids:
            if not i or len(i.split()) != 1 or i != i.strip():
                raise ValueError(f"{self.name}: id {i!r} is empty or contains whitespace (TREC runs split on it)")
            self._ids.write(i + "\n")
        self.rows += len(ids)

    def commit(self) -> None:
        if self.rows != self.count:
            raise RuntimeError(f"{self.name}: wrote {self.rows} rows, announced {self.count}")
        for f in (self._npy, self._ids):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        os.chmod(self._npy_tmp, 0o644)
        os.chmod(self._ids_tmp, 0o644)
        os.replace(self._npy_tmp, self.name + ".npy")
        os.replace(self._ids_tmp, self.name + ".ids")
        write_json(self.name + ".json", self.meta)  # last: marks the shard complete

    def abort(self) -> None:
        for f in (self._npy, self._ids):
            f.close()
        for path in (self._npy_tmp, self._ids_tmp):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


def write_shard(name, ids, vectors: np.ndarray, meta: dict) -> EmbeddingShard:
    """Write a whole in-memory array as a shard (tests, small query sets, other encoders)."""
    vectors = np.asarray(vectors)
    meta = dict(meta)
    with ShardWriter(name, len(ids), vectors.shape[1], meta.pop("dtype", vectors.dtype.name), meta) as w:
        w.write(list(ids), vectors)
    return EmbeddingShard.open(name)


def _mktemp(final: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".tmp-", dir=os.path.dirname(final) or ".")
    os.close(fd)
    return tmp
