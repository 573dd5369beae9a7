"""Encoding: a corpus or queries file -> one embedding shard (the stage behind ``python -m densir.driver.encode``).

    python -m densir.driver.encode --model_name_or_path M --encode_in_path corpus.jsonl \\
        --encoded_save_path DIR/corpus [--encode_is_qry] [--shard_index i --num_shards n] \\
        [--bf16 | --fp16] [--per_device_eval_batch_size B] [--q_max_len 32] [--p_max_len 128]
    python -m densir.driver.encode --model_name_or_path M --dataset_name Tevatron/msmarco-passage-corpus \\
        --encoded_save_path DIR/corpus [--shard_index i --num_shards n] ...

Reads  ``--encode_in_path``: corpus JSONL ``{docid, title, text}`` (title and text joined by
       :func:`densir.formats.passage_text`) or, with ``--encode_is_qry``, queries JSONL
       ``{query_id, query}`` (a duplicate id is an error naming file and line); or, with
       ``--dataset_name`` (``--dataset_config``, ``--dataset_split``, ``--dataset_cache_dir``), a
       Hugging Face dataset in the same layout (:class:`densir.formats.HFDataset`): Tevatron's corpus
       and query sets are encoded as Tevatron's own example encodes them.
Writes the shard ``NAME[.i][.rank<r>-of-<W>]`` = ``.npy`` + ``.ids`` + ``.json``
       (:mod:`densir.embeddings`); the ``.json`` appears last, only when the shard is complete,
       and a rerun finding it skips the work (or fails if it was made with other settings).

Sharding: record g of the input belongs to shard ``g % num_shards`` (a SLURM array runs one
shard per job). Under torchrun (one process per GPU) each process takes every W-th record of
its shard and writes its own piece; the retriever reassembles pieces and shards by name.

Memory: records are streamed ``encode_chunk_size`` at a time, sorted by length inside the chunk
(less padding), encoded in batches and written straight into the npy, so memory is bounded by
chunk + batch, never by the corpus. Rows stay in input order.

Long passages: ``--chunk_tokens N [--chunk_stride S]`` tokenizes each passage once (title and
text joined as above, so the title opens the first window only) and cuts its token ids into
windows of N tokens starting every S tokens (:func:`densir.tokenization.token_windows`: every
token covered, neighbours overlapping by N - S); each window, with the prefix and special tokens,
is one row whose id is the passage's docid (repeated, rows of one passage adjacent); a pre-tokenized
passage (ids) is cut as it is. A passage of at most N tokens is one window (without a prefix, the
same input as without chunking). N plus the prefix and special
tokens must fit the passage ``max_len``. The row count is known before writing: a first pass
tokenizes the shard's passages to count their windows. The shard json records ``chunk_tokens``
and ``chunk_stride``; search scores a document by its best window (:mod:`densir.search.faiss_index`).

Precision: ``--precision auto|fp32|fp16|bf16`` (or the ``--fp16``/``--bf16`` flags; neither: fp32),
resolved by the one policy, :mod:`densir.precision`, and written into the shard json.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from densir.checks import check_ranges
from densir.embeddings import (
    FIELD_DEFAULTS,
    SHARD_SETTINGS,
    EmbeddingShard,
    ShardWriter,
    is_complete,
    model_fingerprint,
    shard_name,
)
from densir.formats import HFDataset, count_records, has_records, hf_dataset_from, iter_corpus, iter_queries, passage_text
from densir.io import InputError, usage_errors
from densir.loading import check_backend, inference
from densir.precision import REQUESTS as PRECISION_REQUESTS
from densir.precision import autocast, precision_from_flags
from densir.retriever.arguments import EncodeArguments, ModelArguments
from densir.retriever.modeling import DenseEncoder
from densir.tokenization import (
    length_batches,
    pad_batch,
    token_ids,
    token_windows,
    tokenize_each,
    tokenize_windows,
    window_overhead,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_LEN = {"query": 32, "passage": 128}  # Tevatron's defaults, used when the checkpoint names none
# settings a complete shard must share with the current request to be skipped on rerun
_RERUN_KEYS = SHARD_SETTINGS  # the writer refuses other settings too, atomically (densir.embeddings.claim_shard)



# --------------------------------------------------------------------------- the stage
def encode_file(model_args: ModelArguments, args: EncodeArguments) -> EmbeddingShard:
    """Encode this process's slice of ``args.encode_in_path`` into its shard; return the shard."""
    rank, world_size, local_rank = _distributed_env()
    name = shard_name(args.encoded_save_path, args.shard_index, args.num_shards, rank, world_size)
    kind = "query" if args.encode_is_qry else "passage"
    source = check_encode_args(args)

    run = inference(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu",
                    args.precision or precision_from_flags(args.fp16, args.bf16), args.backend, args.quantize,
                    args.backend_recipe)  # onnx/openvino: the CPU, fp32 (int8 is --quantize)
    device, precision, recipe = run.device, run.precision, run.recipe
    encoder = DenseEncoder.load(model_args.model_name_or_path, pooling=model_args.pooling,
                                normalize=model_args.normalize, query_prefix=model_args.query_prefix,
                                passage_prefix=model_args.passage_prefix, revision=model_args.model_revision,
                                cache_dir=model_args.cache_dir)
    encoder.eval().to(device)
    full_dim = encoder.p_model.config.hidden_size
    if args.embedding_dim is not None:
        with usage_errors():
            if not 1 <= args.embedding_dim <= full_dim:
                raise ValueError(f"--embedding_dim must be in [1, {full_dim}] (the model's size), got {args.embedding_dim}")
        encoder.embedding_dim = args.embedding_dim
    dim = encoder.embedding_dim or full_dim
    max_len = resolve_max_len(kind, args.q_max_len if kind == "query" else args.p_max_len, encoder.config.max_seq_length)
    models = (encoder.q_model,) if not encoder.config.untied else (encoder.q_model, encoder.p_model)
    meta = {
        "model": _model_label(model_args.model_name_or_path),
        "model_fingerprint": model_fingerprint(*models),
        "pooling": encoder.config.pooling,
        "normalize": bool(encoder.config.normalize),
        "kind": kind,
        "prefix": encoder.config.query_prefix if kind == "query" else encoder.config.passage_prefix,
        "append_eos": bool(encoder.config.append_eos),
        "dim": dim, "full_dim": full_dim,
        "max_len": max_len,
        "precision": precision,
        "backend": args.backend, "quantize": args.quantize, "backend_recipe": recipe,
        "shard_index": args.shard_index, "num_shards": args.num_shards,
        "rank": rank, "world_size": world_size,
        "source": str(source) if isinstance(source, HFDataset) else os.path.abspath(source),
    }
    chunking = args.chunk_tokens is not None
    if chunking:
        meta.update(chunk_tokens=args.chunk_tokens, chunk_stride=args.chunk_stride)
        prefix = encoder.config.passage_prefix or ""
        room = max_len - window_overhead(encoder.tokenizer, prefix, encoder.eos_id)
        with usage_errors():
            if args.chunk_tokens > room:
                raise ValueError(f"--chunk_tokens {args.chunk_tokens} does not fit the passage max_len {max_len} "
                                 f"with the prefix and special tokens ({max_len - room}): use --chunk_tokens <= {room} "
                                 "or a larger --p_max_len")

    if is_complete(name):
        existing = EmbeddingShard.open(name)
        wanted = dict(meta, dtype=args.embedding_dtype)
        diff = [k for k in _RERUN_KEYS if existing.meta.get(k, FIELD_DEFAULTS.get(k)) != wanted.get(k)]
        if diff:
            raise InputError(existing.json_path, None, "a complete shard exists with other settings ("
                             + ", ".join(f"{k}: {existing.meta.get(k)!r} there, {wanted.get(k)!r} now" for k in diff)
                             + "); delete it or choose another --encoded_save_path")
        logger.info("%s is complete (%d vectors); skipping", existing.json_path, existing.count)
        return existing

    total = count_records(source)
    count = len(range(args.shard_index, total, args.num_shards)[rank::world_size])
    def records():
        return _select(_iter_records(source, kind), args.shard_index, args.num_shards, rank, world_size)

    if chunking:  # rows = windows, counted by a tokenizing pass (the npy is allocated at its final size)
        passages = count
        count = _count_windows(encoder.tokenizer, records(), args.chunk_tokens, args.chunk_stride,
                               args.encode_chunk_size)
        logger.info("%d passages cut into %d windows of %d tokens, stride %d", passages, count,
                    args.chunk_tokens, args.chunk_stride)
    logger.info("encoding %d of %d %s records of %s into %s (max_len %d, batch %d, %s, %s)", count, total, kind,
                source, name, max_len, args.per_device_eval_batch_size, precision, device)
    # after the fingerprint, which is the checkpoint's weights; a calibrated recipe calibrates on the input
    encoder = run.prepare(encoder, max_len, calibration=lambda: (t for _, t in _iter_records(source, kind)))
    with ShardWriter(name, count, dim, args.embedding_dtype, meta) as writer, \
            tqdm(total=count, desc=f"encode {Path(name).name}", unit=kind[0], mininterval=10) as bar:
        for chunk in _chunks(records(), args.encode_chunk_size):
            texts = [t for _, t in chunk]
            if chunking:
                features, owner = tokenize_windows(encoder.tokenizer, texts, max_len, args.chunk_tokens,
                                                   args.chunk_stride, encoder.config.passage_prefix or "",
                                                   encoder.eos_id)
                ids = [chunk[o][0] for o in owner]
            else:
                features, ids = None, [i for i, _ in chunk]
            vectors = encode_texts(encoder, texts, kind, max_len, args.per_device_eval_batch_size, precision, device,
                                   progress=bar, max_tokens=args.max_tokens_per_batch, features=features)
            writer.write(ids, vectors)
    logger.info("wrote %s.{npy,ids,json}", name)
    return EmbeddingShard.open(name)


def encode_texts(encoder: DenseEncoder, texts: Sequence[str], kind: str, max_len: int, batch_size: int,
                 precision: str = "fp32", device: torch.device | str = "cpu", progress: tqdm | None = None,
                 max_tokens: int | None = None, features: list[dict] | None = None) -> np.ndarray:
    """Encode texts in batches sorted by token length; return float32 [len(texts), dim] in input order.

    ``kind`` is ``"query"`` (query encoder and prefix) or ``"passage"``. The model must already be
    on ``device`` and in eval mode. Batches hold at most ``batch_size`` texts and, with
    ``max_tokens``, at most that many padded tokens (:func:`densir.tokenization.length_batches`:
    short texts share big batches, long ones small). The texts are tokenized once, unpadded; each
    batch is padded on a background thread, ahead of the model. ``progress``: a tqdm bar advanced by each batch.
    ``features``: the texts already tokenized (e.g. :func:`densir.tokenization.tokenize_windows`'s
    windows): one row per feature, in their order.

    Args:
        encoder: a :class:`DenseEncoder` (e.g. from :func:`densir.load_model`), on ``device``, in eval mode.
        texts: the queries or passages (a passage is ``title + " " + text``).
        kind: ``"query"`` or ``"passage"``.
        max_len, batch_size, precision, device, progress, max_tokens: as above.
    Returns:
        float32 ``[len(texts), dim]``, in input order.

    Example: ``encode_texts(load_model(MODEL, "encoder"), ["a query"], "query", max_len=64, batch_size=32)``.
    """
    device = torch.device(device)
    is_query = kind == "query"
    prefix = encoder.config.query_prefix if is_query else encoder.config.passage_prefix
    forward = encoder.encode_query if is_query else encoder.encode_passage
    # longest first, as sentence-transformers does (it sorts by characters; here by tokens): equal
    # lengths share a batch, little padding, and an out-of-memory shows on the first batch
    if features is None:
        features = tokenize_each(encoder.tokenizer, texts, max_len, prefix, encoder.eos_id)
    batches = length_batches([len(f["input_ids"]) for f in features], batch_size, max_tokens)
    tokenized = (pad_batch(encoder.tokenizer, [features[j] for j in idx]) for idx in batches)
    out = None
    with torch.inference_mode(), autocast(device, precision):
        for idx, batch in zip(batches, _prefetch(tokenized)):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            reps = forward(batch).float().cpu().numpy()
            if out is None:
                out = np.empty((len(features), reps.shape[1]), dtype=np.float32)
            out[idx] = reps
            if progress is not None:
                progress.update(len(idx))
    if out is None:
        out = np.empty((0, encoder.embedding_dim or encoder.p_model.config.hidden_size), dtype=np.float32)
    return out


def check_encode_args(args: EncodeArguments) -> str | HFDataset:
    """Refuse, before the model loads, flags that do not go together (:class:`densir.io.UsageError`)
    and an input with nothing to encode (:class:`densir.io.InputError`: an empty queries file
    would otherwise give a silent 0-row shard). A shard left empty by the round-robin split of a
    non-empty input (more shards or ranks than records) is fine. Returns the input: the
    ``--encode_in_path`` file or the ``--dataset_name`` dataset."""
    with usage_errors():
        if bool(args.encode_in_path) == bool(args.dataset_name):
            raise ValueError("give one input: --encode_in_path (a JSONL file) or --dataset_name (a HF dataset)")
        if args.embedding_dtype not in ("float32", "float16"):
            raise ValueError(f"--embedding_dtype must be float32 or float16, got {args.embedding_dtype!r}")
        request = args.precision or precision_from_flags(args.fp16, args.bf16)
        if request not in PRECISION_REQUESTS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISION_REQUESTS)}, got {request!r}")
        check_backend(args.backend, args.quantize, args.backend_recipe, request)  # fp32 or int8 on onnx/openvino
        check_ranges(args)  # the ranges EncodeArguments declares (also checked when it is built)
        args.check_chunking()
        shard_name(args.encoded_save_path, args.shard_index, args.num_shards)  # --shard_index in range
    what = "queries" if args.encode_is_qry else "corpus"
    if args.dataset_name:
        dataset = hf_dataset_from(args)
        if len(dataset) == 0:
            raise InputError(dataset, None, f"empty {what} dataset: nothing to encode")
        return dataset
    path = args.encode_in_path
    if not os.path.isfile(path):
        raise InputError(path, None, "no such file" if not os.path.exists(path) else "not a file")
    if not has_records(path):  # stops at the first record
        raise InputError(path, None, f"empty {what} file: nothing to encode")
    return path


# --------------------------------------------------------------------------- settings
def resolve_max_len(kind: str, explicit: int | None, checkpoint_max_len: int | None) -> int:
    """An explicit flag wins, then the checkpoint's max_seq_length (sentence-transformers), then Tevatron's."""
    if explicit:
        return explicit
    if checkpoint_max_len:
        return int(checkpoint_max_len)
    return DEFAULT_MAX_LEN[kind]


# --------------------------------------------------------------------------- helpers
def _distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise.

    Encoding needs no collective communication: each process only reads its slice and writes
    its own piece, so no process group is initialised.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world_size, local_rank


def _model_label(model_name_or_path: str) -> str:
    return os.path.abspath(model_name_or_path) if os.path.exists(model_name_or_path) else model_name_or_path


def _iter_records(path, kind: str) -> Iterator[tuple[str, str]]:
    if kind == "query":
        yield from iter_queries(path)
    else:
        for docid, title, text in iter_corpus(path):
            yield docid, passage_text(title, text)


def _select(records: Iterable, shard_index: int, num_shards: int, rank: int, world_size: int) -> Iterator:
    """Record g goes to shard g % num_shards; within it, every world_size-th record to this rank."""
    step = num_shards * world_size
    offset = shard_index + rank * num_shards
    return islice(records, offset, None, step)


def _count_windows(tokenizer, records: Iterable[tuple[str, str]], size: int, stride: int, read: int) -> int:
    """How many :func:`~densir.tokenization.token_windows` the passages of ``records`` give."""
    total = 0
    for chunk in _chunks(records, read):
        lengths = [len(x) for x in token_ids(tokenizer, [t for _, t in chunk])]
        total += sum(len(token_windows(n, size, stride)) for n in lengths)
    return total


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _prefetch(iterable: Iterable, depth: int = 4) -> Iterator:
    """Run ``iterable`` (tokenization) in a background thread, ``depth`` items ahead of the model."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)
            return
        q.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)

