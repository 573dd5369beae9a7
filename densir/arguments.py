"""Argument dataclasses for every stage, parsed by ``transformers.HfArgumentParser``.

A stage takes flags or a single ``.json`` file holding the same names, so a run is reproducible
from its argument file. Names follow Tevatron's where one exists.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments


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


@dataclass
class DataArguments:
    """Train groups for the bi-encoder: JSONL files (get_data.sh's output) or a HF dataset."""

    train_dir: list[str] = field(default_factory=list, metadata={
        "help": "train-group JSONL file(s), or directories whose files matching --train_pattern are read "
                "(sorted by name, each one logged)"})
    train_pattern: str = field(default="*.jsonl", metadata={"help": "file pattern inside a --train_dir directory"})
    train_expected_files: Optional[int] = field(default=None, metadata={
        "help": "fail unless --train_dir resolves to exactly this many files (guards a half-copied dir)"})
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "a Hugging Face dataset in Tevatron's layout (hub name or local path), instead of --train_dir"})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "its configuration name"})
    dataset_split: str = field(default="train", metadata={"help": "its split"})
    dataset_cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache dir"})
    q_max_len: int = field(default=32, metadata={"help": "query tokens, special tokens included"})
    p_max_len: int = field(default=128, metadata={"help": "passage tokens (title + text), special tokens included"})
    train_n_passages: int = field(default=8, metadata={"help": "passages per query: 1 positive + n-1 negatives"})
    pad_to_multiple_of: Optional[int] = field(default=None, metadata={
        "help": "pad batches to a multiple of this (8 helps tensor cores on GPU); default: the longest item"})

    def __post_init__(self):
        if not self.train_dir and not self.dataset_name:
            raise ValueError("give --train_dir (train-group JSONL) or --dataset_name")
        if self.train_n_passages < 1:
            raise ValueError("--train_n_passages must be >= 1")


@dataclass
class BaseTrainingArguments(TrainingArguments):
    """HF ``TrainingArguments`` (every Trainer flag) with densir's defaults; the base of every densir
    trainer's arguments (bi-encoder here, cross-encoder re-ranker too).

    ``--resume_from_checkpoint auto`` resumes from the latest ``checkpoint-*`` in ``output_dir``
    (starting afresh when there is none); a path resumes from that checkpoint.
    """

    # the batch dicts are nested ({"query": ..., "passage": ...}): nothing to drop by signature
    remove_unused_columns: bool = field(default=False, metadata={"help": "kept False: densir batches are nested"})
    report_to: Optional[str] = field(default="none", metadata={"help": "integrations to report to (HF flag)"})
    logging_steps: float = field(default=10, metadata={"help": "log every N optimizer steps"})
    warmup_ratio: Optional[float] = field(default=None, metadata={
        "help": "warmup as a fraction of all steps (Tevatron's flag; transformers 5 spells it --warmup_steps 0.1)"})

    def __post_init__(self):
        import torch

        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps and self.warmup_ratio:
                raise ValueError("give --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_steps or self.warmup_ratio

        if not torch.cuda.is_available():
            # without it HF refuses --bf16, and under torchrun accelerate sees no distributed CPU
            # setup (each rank would train alone on the whole data): CPU means gloo DDP
            self.use_cpu = True
            self.dataloader_pin_memory = False  # nothing to pin to (and a warning per epoch)
        super().__post_init__()


@dataclass
class DenseTrainingArguments(BaseTrainingArguments):
    """Bi-encoder training: the contrastive loss, cross-device negatives, grad cache."""

    temperature: float = field(default=1.0, metadata={
        "help": "scores are q.p / temperature (0.01-0.05 for normalized embeddings, 1 for raw dot products)"})
    negatives_x_device: bool = field(default=False, metadata={
        "help": "under torchrun, every rank's passages are negatives for every query"})
    grad_cache: bool = field(default=False, metadata={
        "help": "gradient cache (Gao et al. 2021): exact large-batch gradients in chunks of bounded memory"})
    gc_q_chunk_size: int = field(default=4, metadata={"help": "queries per chunk with --grad_cache"})
    gc_p_chunk_size: int = field(default=32, metadata={"help": "passages per chunk with --grad_cache"})


def parse_args(*dataclass_types, argv: Optional[list[str]] = None):
    """Parse flags (``argv``, default ``sys.argv[1:]``), or one ``.json`` argument file, into the dataclasses."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(dataclass_types)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


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
