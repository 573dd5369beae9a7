"""The bi-encoder's argument dataclasses (training, encoding), parsed by :func:`densir.arguments.parse_args`.
Names follow Tevatron's where one exists."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from densir.arguments import RANKING_METRICS, BaseTrainingArguments, backend_fields
from densir.checks import at_least, between, check_ranges, positive
from densir.io import ParameterError
from densir.lora import LoraArguments
from densir.losses import TEACHER_LOSSES

VALIDATION_METRICS = (*RANKING_METRICS, "Recall@100")  # logged as eval_nDCG@10, ...


_BACKEND = backend_fields("texts of the input")


@dataclass
class ModelArguments(LoraArguments):
    """The encoder: shared by training, encoding and hard-negative mining."""

    model_name_or_path: str = field(metadata={"help": "HF hub name, HF dir, sentence-transformers dir or densir dir"})
    pooling: Optional[str] = field(default=None, metadata={
        "help": "cls | mean | last; default: what the checkpoint says (densir or sentence-transformers dir), else cls"})
    normalize: Optional[bool] = field(default=None, metadata={
        "help": "L2-normalize embeddings; default: what the checkpoint says, else off"})
    model_revision: Optional[str] = field(default=None, metadata={
        "help": "hub revision (branch, tag or commit) of a hub id; default main"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Hugging Face cache dir (default: HF_HOME's)"})
    untie_encoder: bool = field(default=False, metadata={"help": "separate query and passage encoders"})
    query_prefix: Optional[str] = field(default=None, metadata={"help": "text put before every query, e.g. 'query: '"})
    passage_prefix: Optional[str] = field(default=None, metadata={"help": "text put before every passage"})
    attention_dropout: Optional[float] = field(default=None, metadata={"range": between(0, 1, high_open=True),
        "help": "training: attention-probability dropout (default: the checkpoint's, 0.1 for BERT); 0 lets the "
                "CPU run torch's fused attention kernel in training (densir.models.set_attention_dropout)"})
    query_instruction: Optional[str] = field(default=None, metadata={
        "help": "training: a task description; the query prefix becomes 'Instruct: {task}\\nQuery: ' (saved with "
                "the model, so encoding applies it)"})
    append_eos: Optional[bool] = field(default=None, metadata={
        "help": "end every query and passage with the EOS token; default: yes for a decoder (Llama, Qwen2, ...) "
                "with --pooling last (RepLLaMA), else what the checkpoint says"})
    bidirectional: bool = field(default=False, metadata={
        "help": "decoders (llama, mistral, qwen2, qwen3): every token attends to every real token, not only earlier "
                "ones (LLM2Vec / NV-Embed style); saved with the model, so encoding applies it (torch backend)"})


@dataclass
class DataArguments:
    """Train groups for the bi-encoder: JSONL files (get_data.sh's output) or a HF dataset."""

    train_dir: list[str] = field(default_factory=list, metadata={
        "help": "train-group JSONL file(s), or directories whose files matching --train_pattern are read "
                "(sorted by name, each one logged)"})
    train_pattern: str = field(default="*.jsonl", metadata={"help": "file pattern inside a --train_dir directory"})
    train_expected_files: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "fail unless --train_dir resolves to exactly this many files (guards a half-copied dir)"})
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "a Hugging Face dataset in Tevatron's layout (hub name or local path), instead of --train_dir"})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "its configuration name"})
    dataset_split: str = field(default="train", metadata={"help": "its split"})
    dataset_cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache dir"})
    q_max_len: int = field(default=32, metadata={"range": at_least(1), "help": "query tokens, special tokens included"})
    p_max_len: int = field(default=128, metadata={"range": at_least(1),
        "help": "passage tokens (title + text), special tokens included"})
    train_n_passages: int = field(default=8, metadata={"range": at_least(1),
        "help": "passages per query: 1 positive + n-1 negatives"})
    pad_to_multiple_of: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "pad batches to a multiple of this (8 helps tensor cores on GPU); default: the longest item"})
    # validation during training (densir.validation), every --eval_steps with --eval_strategy steps
    eval_queries: Optional[str] = field(default=None, metadata={
        "help": "held-out queries JSONL {query_id, query} searched at every evaluation (with --eval_qrels)"})
    eval_qrels: Optional[str] = field(default=None, metadata={"help": "their qrels (TREC or BEIR)"})
    eval_corpus: Optional[str] = field(default=None, metadata={
        "help": "corpus JSONL searched; default: corpus.jsonl beside --eval_queries (get_data.sh's layout)"})
    eval_sample_bm25_run: Optional[str] = field(default=None, metadata={
        "help": "search a sample instead of the whole corpus: every judged passage of the eval queries plus "
                "the top --eval_sample_depth passages of this (BM25) run for each of them"})
    eval_sample_depth: int = field(default=100, metadata={"range": at_least(0),
        "help": "distractors per eval query from that run"})

    def __post_init__(self):
        check_ranges(self)
        if not self.train_dir and not self.dataset_name:
            raise ParameterError("give `train_dir` (train-group JSONL) or `dataset_name`")
        if self.train_n_passages < 1:
            raise ParameterError("`train_n_passages` must be >= 1")
        if bool(self.eval_queries) != bool(self.eval_qrels):
            raise ParameterError("`eval_queries` and `eval_qrels` go together")
        if (self.eval_corpus or self.eval_sample_bm25_run) and not self.eval_queries:
            raise ParameterError("`eval_corpus` / `eval_sample_bm25_run` need `eval_queries` and `eval_qrels`")
        if self.eval_sample_depth < 0:
            raise ParameterError(f"`eval_sample_depth` must be >= 0, got {self.eval_sample_depth}")


@dataclass
class DenseTrainingArguments(BaseTrainingArguments):
    """Bi-encoder training: the contrastive loss, cross-device negatives, grad cache, distillation,
    validation settings."""

    temperature: float = field(default=1.0, metadata={"range": positive(),
        "help": "scores are q.p / temperature (0.01-0.05 for normalized embeddings, 1 for raw dot products)"})
    negatives_x_device: bool = field(default=False, metadata={
        "help": "under torchrun, every rank's passages are negatives for every query"})
    gc_q_chunk_size: int = field(default=4, metadata={"range": at_least(1), "help": "queries per chunk with --grad_cache"})
    gc_p_chunk_size: int = field(default=32, metadata={"range": at_least(1), "help": "passages per chunk with --grad_cache"})
    # distillation from teacher scores carried by the train groups (densir.retriever.loss)
    distill_loss: Optional[str] = field(default=None, metadata={
        "help": f"{' | '.join(TEACHER_LOSSES)} (densir.losses: margin_mse = MarginMSE, Hofstaetter et al. 2020; "
                "kl = listwise KL over each query's group, RocketQAv2); student scores are q.p / --temperature; "
                "needs teacher scores in the train groups"})
    distill_weight: float = field(default=1.0, metadata={"range": at_least(0, float), "help": "weight of the distillation loss"})
    contrastive_weight: float = field(default=1.0, metadata={"range": at_least(0, float),
        "help": "weight of the contrastive loss; 0 with --distill_loss = distillation alone"})
    teacher_temperature: float = field(default=1.0, metadata={"range": positive(),
        "help": "--distill_loss kl: the teacher's distribution is softmax(teacher scores / this)"})
    # Matryoshka (densir.retriever.matryoshka)
    matryoshka_dims: Optional[str] = field(default=None, metadata={
        "help": "comma-separated sizes, e.g. 384,256,128,64: the loss is trained on the first d "
                "dimensions for each d (Matryoshka representation learning)"})
    matryoshka_weights: Optional[str] = field(default=None, metadata={
        "help": "comma-separated weights of those sizes' losses (default 1 each)"})
    # validation during training: the data flags are DataArguments' --eval_queries/--eval_qrels/...
    default_eval_metrics = VALIDATION_METRICS
    per_device_eval_batch_size: int = field(default=128, metadata={"range": at_least(1),
        "help": "texts per forward pass when validation encodes (densir.driver.encode's default)"})

    def __post_init__(self):
        check_ranges(self)  # every range before the checks across fields
        if self.distill_loss is not None and self.distill_loss not in TEACHER_LOSSES:
            raise ParameterError(f"`distill_loss` must be one of {', '.join(TEACHER_LOSSES)}, "
                                 f"got {self.distill_loss!r}")
        if self.contrastive_weight == 0 and not self.distill_loss:
            raise ParameterError("`contrastive_weight` 0 leaves nothing to train on without `distill_loss`")
        from densir.retriever.matryoshka import parse_dims

        parse_dims(self.matryoshka_dims, self.matryoshka_weights)
        super().__post_init__()


@dataclass
class EncodeArguments:
    """The encoding stage (python -m densir.driver.encode): one input file -> one embedding shard."""

    encoded_save_path: str = field(metadata={"help": "shard NAME: writes NAME.npy/.ids/.json (NAME.i with "
                                                     "--num_shards > 1; NAME[.i].rank<r>-of-<W> under torchrun)"})
    encode_in_path: Optional[str] = field(default=None, metadata={
        "help": "corpus JSONL {docid,title,text}, or queries JSONL {query_id,query} with --encode_is_qry"})
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "instead of --encode_in_path: a Hugging Face dataset in the same layout (hub name or local dir), "
                "e.g. Tevatron/msmarco-passage-corpus, or Tevatron/msmarco-passage --dataset_split dev "
                "--encode_is_qry"})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "its configuration name"})
    dataset_split: str = field(default="train", metadata={"help": "its split"})
    dataset_cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache dir"})
    encode_is_qry: bool = field(default=False, metadata={"help": "encode queries (query encoder, q_max_len)"})
    q_max_len: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "query token budget; default: the checkpoint's max_seq_length, else 32"})
    p_max_len: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "passage token budget; default: the checkpoint's max_seq_length, else 128"})
    per_device_eval_batch_size: int = field(default=128, metadata={"range": at_least(1),
        "help": "texts per forward pass, per process"})
    max_tokens_per_batch: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "also cap each batch at this many padded tokens (texts x the longest): batches of short "
                "texts grow to --per_device_eval_batch_size, long ones shrink; default no cap"})
    precision: Optional[str] = field(default=None, metadata={
        "help": "auto | fp32 | fp16 | bf16 (densir.precision: auto = bf16 where the device has it, else fp16 on "
                "CUDA, else fp32); default: from --fp16/--bf16, else fp32"})
    fp16: bool = field(default=False, metadata={"help": "fp16 autocast (CUDA only; fp32 on CPU)"})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast (CUDA, or CPU: fast only with avx512_bf16/AMX)"})
    backend: str = _BACKEND[0]
    quantize: str = _BACKEND[1]
    backend_recipe: Optional[str] = _BACKEND[2]
    shard_index: int = field(default=0, metadata={"range": at_least(0),
        "help": "which of --num_shards round-robin slices of the input"})
    num_shards: int = field(default=1, metadata={"range": at_least(1),
        "help": "split the input into this many shards (separate jobs)"})
    encode_chunk_size: int = field(default=50_000, metadata={"range": at_least(1),
        "help": "texts read at a time and sorted by length into batches; memory is bounded by this, not the corpus"})
    embedding_dtype: str = field(default="float32", metadata={"help": "float32 | float16 (half the disk)"})
    embedding_dim: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "keep the first d dimensions of every vector (a Matryoshka-trained model), re-normalized when the "
                "model normalizes; the shard records d and search refuses to mix sizes"})
    chunk_tokens: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "long passages: cut each passage's tokens into windows of this many tokens (plus the prefix and "
                "special tokens, which must fit --p_max_len), one row per window, the docid repeated; search "
                "scores a document by its best window (MaxP); default: one row per passage, cut at --p_max_len"})
    chunk_stride: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "with --chunk_tokens: a window starts every this many tokens (<= --chunk_tokens, so windows "
                "overlap by the difference and cover every token); default --chunk_tokens // 2 (at least 1)"})

    def __post_init__(self):
        check_ranges(self)
        self.check_chunking()
        if self.shard_index >= self.num_shards:
            raise ValueError(f"--shard_index must be < --num_shards {self.num_shards}, got {self.shard_index}")

    def check_chunking(self) -> None:
        """--chunk_stride needs --chunk_tokens and is at most it (default half of it); passages only."""
        if self.chunk_stride is not None and self.chunk_tokens is None:
            raise ValueError("--chunk_stride needs --chunk_tokens")
        if self.chunk_tokens is not None:
            if self.chunk_stride is None:
                self.chunk_stride = max(self.chunk_tokens // 2, 1)
            if self.chunk_stride > self.chunk_tokens:
                raise ValueError(f"--chunk_stride must be <= --chunk_tokens {self.chunk_tokens} (else tokens "
                                 f"between windows are never encoded), got {self.chunk_stride}")
            if self.encode_is_qry:
                raise ValueError("--chunk_tokens is for passages; queries are not chunked (drop it with --encode_is_qry)")
