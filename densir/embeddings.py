"""Embedding shards: the on-disk format between encoding and search (the README's "Data formats").

A shard ``NAME`` is three files::

    NAME.npy    float32 or float16 [count, dim], memory-mappable (np.load(mmap_mode="r"))
    NAME.ids    one id a line, row i of the npy is the vector of line i
    NAME.json   model, model_fingerprint, pooling, normalize, kind (query|passage), dim, dtype,
                count, max_len, prefix, precision, shard_index, num_shards, rank, world_size;
                full_dim (the model's size when ``encode --embedding_dim`` kept the first ``dim``), append_eos;
                chunk_tokens, chunk_stride (``encode --chunk_tokens``: one row per token window of a
                passage, its docid repeated on adjacent lines; absent: one row per passage)

:class:`ShardWriter` fills the npy and ids under temp names and renames them to their final names
data first, ``.json`` last: a shard is complete exactly when its ``.json`` exists. An npy without
its json is a half-written shard and every reader refuses it.

Shard names. ``encode --encoded_save_path DIR/corpus`` writes ``DIR/corpus``; with
``--num_shards n`` (n > 1) shard i is ``DIR/corpus.i``; under torchrun each of W processes writes
its own piece ``<shard>.rank<r>-of-<W>``. A reader is given a name or a glob pattern over names
(``'DIR/corpus.*'``) and resolves it with :func:`resolve_shards`, which checks from the pieces'
own json that the set is whole: every shard index 0..n-1 present (or the expected count given by
the caller), every rank of every shard present, nothing half-written. No bare ``glob('*')``.

Checked on read (:func:`resolve_shards`): an npy that is empty, truncated or not the shape and
dtype its json says; ids that are not UTF-8, or repeat within or across the pieces (in a chunked
shard a docid repeats on adjacent lines, one per window, and nowhere else); a vector that
is NaN or infinite (the file and the row, i.e. the line of its id in ``NAME.ids``).

One writer per shard: :class:`ShardWriter` claims ``NAME.lock`` (``flock``, released by the
kernel when the process dies, even by SIGKILL); a second writer of the same name is refused at
once, and one finding a complete shard made with other settings is refused too. Holding the
claim, the writer removes the ``NAME.*.tmp-*`` files a killed writer of this name left behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from densir.io import InputError, iter_lines, read_json, write_json

logger = logging.getLogger(__name__)

SUFFIXES = (".npy", ".ids", ".json")
# fields that must agree between a query shard and the passage shards it is searched against
# and with each other; backend/quantize/backend_recipe: what ran the model (densir.backends), so an int8
# or exported encode is never searched against vectors the checkpoint itself made
COMPATIBLE_FIELDS = ("model_fingerprint", "pooling", "normalize", "dim", "backend", "quantize", "backend_recipe")
# what a shard written before backends existed (or by another tool) was made with
FIELD_DEFAULTS = {"backend": "torch", "quantize": "none", "backend_recipe": "torch-fp32", "append_eos": False,
                  "chunk_tokens": None, "chunk_stride": None}
_RANK_RE = re.compile(r"\.rank(\d+)-of-(\d+)$")
# the settings that make two shards of one name the same shard: a writer refuses to replace a
# complete shard that differs in any of them (densir.retriever.encode skips one that agrees)
SHARD_SETTINGS = ("model_fingerprint", "pooling", "normalize", "kind", "prefix", "append_eos", "dim", "max_len", "precision",
                  "backend", "quantize", "backend_recipe", "shard_index", "num_shards", "rank", "world_size",
                  "dtype", "chunk_tokens", "chunk_stride")
CHECK_ROWS = 65536  # rows per block when reading a shard's vectors to check them


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
    """One complete shard (or torchrun piece of a shard) on disk: ``NAME.npy`` vectors (memory-mapped),
    ``NAME.ids``, ``NAME.json`` settings (README "Data formats").

    Example::

        shard = EmbeddingShard.open("runs/demo/round2/enc/corpus.0")
        shard.count, shard.dim, shard.meta["model"]
    """

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
    def chunked(self) -> bool:
        """One row per token window of a passage (``encode --chunk_tokens``), the docid repeated."""
        return self.meta.get("chunk_tokens") is not None

    @property
    def json_path(self) -> str:
        return self.name + ".json"

    def vectors(self) -> np.ndarray:
        """The [count, dim] array, memory-mapped read-only (nothing is loaded until sliced)."""
        return np.load(self.name + ".npy", mmap_mode="r", allow_pickle=False)

    def ids(self) -> list[str]:
        """The ids, row by row; bytes that are not UTF-8 name the line (:func:`densir.io.iter_lines`)."""
        ids = [line.rstrip("\n") for _, line in iter_lines(self.name + ".ids")]
        if len(ids) != self.count:
            raise InputError(self.name + ".ids", None, f"{len(ids)} ids, but {self.json_path} says count={self.count}")
        return ids

    def check_finite(self, block_rows: int = CHECK_ROWS) -> None:
        """Refuse a NaN or infinite vector, naming the row (its id's line in ``NAME.ids``)."""
        vectors = self.vectors()
        for start in range(0, self.count, block_rows):
            block = np.asarray(vectors[start:start + block_rows])
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                row = start + int(np.argmin(finite))
                raise InputError(self.name + ".npy", None, f"row {row + 1} (the id on line {row + 1} of "
                                 f"{self.name}.ids) holds NaN or infinite values: the encoder overflowed "
                                 "(e.g. fp16) or the file is damaged; re-encode it", "vector")

    def check_compatible(self, other: "EmbeddingShard") -> None:
        """Raise unless ``other`` was encoded by the same model/pooling/normalization/dim as ``self``."""
        # the weights' fingerprint identifies the model whatever path it was loaded from; shards
        # written without one (other tools) must name the same model
        fingerprinted = bool(self.meta.get("model_fingerprint") and other.meta.get("model_fingerprint"))
        keys = COMPATIBLE_FIELDS if fingerprinted else ("model",) + COMPATIBLE_FIELDS[1:]
        for key in keys:
            default = FIELD_DEFAULTS.get(key)
            mine, theirs = self.meta.get(key, default), other.meta.get(key, default)
            if mine != theirs and key == "dim":
                raise InputError(other.json_path, None,
                                 f"dim={theirs!r} (of {other.meta.get('full_dim', theirs)}) does not match dim={mine!r} "
                                 f"(of {self.meta.get('full_dim', mine)}) of {self.json_path}: vectors of different "
                                 "sizes cannot be searched together; encode queries and passages at one "
                                 "--embedding_dim", key)
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
        path = self.name + ".npy"
        try:
            arr = self.vectors()  # a memmap: reads the header only
        except (ValueError, EOFError, OSError) as e:  # not npy, 0 bytes, shorter than its header says
            what = "empty file" if os.path.getsize(path) == 0 else " ".join(str(e).split()) or type(e).__name__
            raise InputError(path, None, f"not a readable npy array ({what}); re-encode it") from None
        expected = arr.offset + arr.size * arr.dtype.itemsize
        if os.path.getsize(path) != expected:
            raise InputError(path, None, f"{os.path.getsize(path)} bytes, but its header announces {expected}: "
                             "truncated or damaged; re-encode it")
        return tuple(arr.shape), arr.dtype


def resolve_shards(spec, expected_shards: int | None = None, kind: str | None = None,
                   check_values: bool = True) -> list[EmbeddingShard]:
    """Turn a shard name or glob pattern over names into complete pieces, in (shard, rank) order.

    Refuses: nothing matched, a half-written piece, pieces that disagree on ``num_shards`` or
    ``world_size``, a missing shard index or rank, a count different from ``expected_shards``
    (shards, not torchrun pieces) and, with ``kind``, a shard of the other kind (query/passage).
    With ``check_values`` (the default) it also reads the ids and vectors: an id in two rows (of
    one piece or two) and a NaN/infinite vector are refused, naming the file and line/row.
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
    if check_values:
        check_unique_ids(pieces)
        for p in pieces:
            p.check_finite()
    return pieces


def check_unique_ids(pieces: list[EmbeddingShard]) -> None:
    """Refuse an id that two rows share (within a piece or across pieces), naming both places.

    In a chunked piece (:attr:`EmbeddingShard.chunked`) the rows of one passage's windows share its
    docid on adjacent lines: each such run counts as one id, so a docid is still refused in two
    places (two runs of a piece, or two pieces).

    The ids are compared as bytes in one sorted numpy array (a few bytes an id, not a Python
    string each), so an MS MARCO-sized set is checked in seconds."""
    arrays, owners, lines = [], [], []
    for j, p in enumerate(pieces):
        ids = p.ids()  # checks UTF-8 and the count
        array = np.array([i.encode("utf-8") for i in ids], dtype=bytes) if ids else np.array([], dtype="S1")
        line = np.arange(1, len(ids) + 1)
        if p.chunked and len(array):  # one entry per run of adjacent equal ids (a passage's windows)
            first = run_starts(array)
            array, line = array[first], line[first]
        arrays.append(array)
        lines.append(line)
        owners.append(np.full(len(array), j, dtype=np.int32))
    if not arrays:
        return
    everything = np.concatenate(arrays)
    if len(everything) < 2:
        return
    order = np.argsort(everything, kind="stable")
    ranked = everything[order]
    same = np.flatnonzero(ranked[1:] == ranked[:-1])
    if not len(same):
        return
    a, b = int(order[same[0]]), int(order[same[0] + 1])
    owner = np.concatenate(owners)
    starts = np.cumsum([0] + [len(x) for x in arrays])
    where = [(pieces[int(owner[i])], int(lines[owner[i]][i - int(starts[owner[i]])])) for i in (a, b)]
    (first, first_line), (second, second_line) = where
    raise InputError(second.name + ".ids", second_line, f"id {ranked[same[0]].decode('utf-8')!r} is also on line "
                     f"{first_line} of {first.name}.ids: overlapping shards (the same input encoded twice?)", "id")


def run_starts(ids: np.ndarray) -> np.ndarray:
    """Rows whose id differs from the row before (the first window of each passage of a chunked shard)."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))


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
    """A short hash of the encoder's weights (input embeddings + a final-layer tensor, + a LoRA adapter's).

    Two shards are comparable when their fingerprints agree, whatever path the model was loaded from.
    """
    h = hashlib.sha1()
    for module in modules:
        params = list(module.parameters())
        # a LoRA model (densir.lora): its adapter weights too, which the first and last tensors may not be
        adapter = [p for n, p in module.named_parameters() if "lora_" in n]
        for p in (params[0], params[-1], *adapter):
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

    First the writer claims the name (:func:`claim_shard`): another live writer of it, or a
    complete shard of it made with other :data:`SHARD_SETTINGS`, is an :class:`InputError`;
    then the temporaries of a writer of this name that died are removed.
    """

    def __init__(self, name, count: int, dim: int, dtype: str, meta: dict):
        self.name = str(name)
        self.count, self.dim, self.dtype = count, dim, np.dtype(dtype)
        self.meta = dict(meta, dim=dim, count=count, dtype=self.dtype.name)
        Path(self.name).parent.mkdir(parents=True, exist_ok=True)
        base = os.path.basename(self.name)
        self._claim = claim_shard(self.name, self.meta)
        try:
            self._open_temps()
        except BaseException:
            self._claim.close()
            raise
        self.rows = 0
        logger.debug("writing %s (%d x %d %s) via %s", base, count, dim, self.dtype, self._npy_tmp)

    def _open_temps(self) -> None:
        count, dim = self.count, self.dim
        self._npy_tmp = _mktemp(self.name + ".npy")
        self._ids_tmp = _mktemp(self.name + ".ids")
        mm = np.lib.format.open_memmap(self._npy_tmp, mode="w+", dtype=self.dtype, shape=(count, dim))
        self._offset = mm.offset
        del mm  # only the header and the file size came from the memmap
        self._npy = open(self._npy_tmp, "r+b")
        self._ids = open(self._ids_tmp, "w", encoding="utf-8", newline="\n")

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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name + ".json")  # an older complete shard of the same settings: incomplete now
        os.replace(self._npy_tmp, self.name + ".npy")
        os.replace(self._ids_tmp, self.name + ".ids")
        write_json(self.name + ".json", self.meta)  # last: marks the shard complete
        self._claim.close()

    def abort(self) -> None:
        for f in (self._npy, self._ids):
            f.close()
        for path in (self._npy_tmp, self._ids_tmp):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._claim.close()

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


class ShardClaim:
    """An exclusive ``flock`` on ``NAME.lock``, held while one process writes shard ``NAME``."""

    def __init__(self, path: str, fd: int):
        self.path, self._fd = path, fd

    def close(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked: a waiter re-checks the inode (claim_shard)
        os.close(self._fd)
        self._fd = None


def claim_shard(name: str, meta: dict | None = None) -> ShardClaim:
    """Claim shard ``name`` for writing: exactly one process at a time writes a name.

    Refused (:class:`InputError`) when another live process holds the claim, or (with ``meta``)
    when a complete shard of this name exists with other :data:`SHARD_SETTINGS` (so that two
    encodes with different settings never both succeed, whatever their timing). With the claim
    held, ``NAME.{npy,ids,json}.tmp-*`` can only be a dead writer's: they are removed.
    """
    lock = name + ".lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(name, None, f"another process is writing this shard now ({lock} is locked): "
                             "wait for it, or choose another --encoded_save_path") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder released and unlinked it between our open and flock: try again
    claim = ShardClaim(lock, fd)
    try:
        if meta is not None and is_complete(name):
            existing = read_json(name + ".json")
            diff = [k for k in SHARD_SETTINGS
                    if existing.get(k, FIELD_DEFAULTS.get(k)) != meta.get(k, FIELD_DEFAULTS.get(k))]
            if diff:
                raise InputError(name + ".json", None, "a complete shard exists with other settings ("
                                 + ", ".join(f"{k}: {existing.get(k)!r} there, {meta.get(k)!r} now" for k in diff)
                                 + "); delete it or choose another --encoded_save_path")
        for suffix in SUFFIXES:
            for stale in glob.glob(glob.escape(name + suffix) + ".tmp-*"):
                logger.info("removing %s, left by a writer of %s that did not finish", stale, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stale)
    except BaseException:
        claim.close()
        raise
    return claim


def _mktemp(final: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".tmp-", dir=os.path.dirname(final) or ".")
    os.close(fd)
    return tmp
