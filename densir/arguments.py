"""Argument dataclasses for every stage, parsed by ``transformers.HfArgumentParser``.

A stage takes flags or a single ``.json`` file holding the same names, so a run is reproducible
from its argument file. Names follow Tevatron's where one exists.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelArguments:
    """The encoder: shared by training, encoding and hard-negative mining."""

    model_name_or_path: str = field(metadata={"help": "HF hub name, HF dir, sentence-transformers dir or densir dir"})
    pooling: Optional[str] = field(default=None, metadata={
        "help": "cls | mean | last; default: what the checkpoint says (densir or sentence-transformers dir), else cls"})
    normalize: Optional[bool] = field(default=None, metadata={
        "help": "L2-normalize embeddings; default: what the checkpoint says, else off"})
    untie_encoder: bool = field(default=False, metadata={"help": "separate query and passage encoders"})
    query_prefix: Optional[str] = field(default=None, metadata={"help": "text put before every query, e.g. 'query: '"})
    passage_prefix: Optional[str] = field(default=None, metadata={"help": "text put before every passage"})


def parse_args(*dataclass_types):
    """Parse flags, or one ``.json`` argument file, into the given dataclasses."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        return parser.parse_json_file(json_file=sys.argv[1])
    return parser.parse_args_into_dataclasses()


@dataclass
class EncodeArguments:
    """The encoding stage (python -m densir.driver.encode): one input file -> one embedding shard."""

    encode_in_path: str = field(metadata={"help": "corpus JSONL {docid,title,text}, or queries JSONL {query_id,query} "
                                                  "with --encode_is_qry"})
    encoded_save_path: str = field(metadata={"help": "shard NAME: writes NAME.npy/.ids/.json (NAME.i with "
                                                     "--num_shards > 1; NAME[.i].rank<r>-of-<W> under torchrun)"})
    encode_is_qry: bool = field(default=False, metadata={"help": "encode queries (query encoder, q_max_len)"})
    q_max_len: Optional[int] = field(default=None, metadata={
        "help": "query token budget; default: the checkpoint's max_seq_length, else 32"})
    p_max_len: Optional[int] = field(default=None, metadata={
        "help": "passage token budget; default: the checkpoint's max_seq_length, else 128"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "texts per forward pass, per process"})
    fp16: bool = field(default=False, metadata={"help": "fp16 autocast (CUDA only; fp32 on CPU)"})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast (CUDA, or CPU: fast only with avx512_bf16/AMX)"})
    shard_index: int = field(default=0, metadata={"help": "which of --num_shards round-robin slices of the input"})
    num_shards: int = field(default=1, metadata={"help": "split the input into this many shards (separate jobs)"})
    encode_chunk_size: int = field(default=50_000, metadata={
        "help": "texts read at a time and sorted by length into batches; memory is bounded by this, not the corpus"})
    embedding_dtype: str = field(default="float32", metadata={"help": "float32 | float16 (half the disk)"})
