"""The cross-encoder's argument dataclasses (training, re-ranking), parsed by :func:`densir.arguments.parse_args`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from densir.arguments import RANKING_METRICS, BaseTrainingArguments, backend_fields
from densir.checks import at_least, between, check_ranges, positive
from densir.io import ParameterError
from densir.lora import LoraArguments
from densir.losses import LOSSES, TEACHER_LOSSES
from densir.losses.ranknet import REDUCTIONS
from densir.retriever.arguments import DataArguments

RERANK_VALIDATION_METRICS = RANKING_METRICS  # BaseTrainingArguments.eval_metrics' default


_BACKEND = backend_fields("pairs of the run")


@dataclass
class RerankerModelArguments(LoraArguments):
    model_name_or_path: str = field(metadata={
        "help": "a cross-encoder (densir, HF one-label classifier, sentence-transformers CrossEncoder) "
                "or an encoder to put a fresh one-logit head on"})
    model_revision: Optional[str] = field(default=None, metadata={"help": "hub revision of a hub id (default main)"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Hugging Face cache dir (default: HF_HOME's)"})


@dataclass
class RerankerDataArguments(DataArguments):
    """The bi-encoder's train-group arguments; pairs are budgeted by --max_len instead."""

    max_len: int = field(default=256, metadata={"range": at_least(1),
        "help": "tokens of query + passage together, special tokens included (the passage is truncated)"})
    q_max_len: int = field(default=32, metadata={"help": "not used by the re-ranker (see --max_len)"})
    p_max_len: int = field(default=128, metadata={"help": "not used by the re-ranker (see --max_len)"})

    # validation during training (densir.reranker.validation): with DataArguments' --eval_queries,
    # --eval_qrels, --eval_corpus
    eval_run: Optional[str] = field(default=None, metadata={
        "help": "first-stage TREC run whose top --eval_depth hits of the --eval_queries are re-ranked at every "
                "evaluation (e.g. a held-out split's BM25 or round-2 run)"})

    def __post_init__(self):
        super().__post_init__()
        if self.train_n_passages < 2:
            raise ParameterError("`train_n_passages` must be >= 2 for a re-ranker (a positive and a negative)")
        if self.eval_sample_bm25_run:
            raise ParameterError("`eval_sample_bm25_run` is the bi-encoder's; the re-ranker re-ranks `eval_run`")
        if bool(self.eval_run) != bool(self.eval_queries):
            raise ParameterError("the re-ranker's validation needs `eval_run` with `eval_queries` and `eval_qrels`")


@dataclass
class RerankerTrainingArguments(BaseTrainingArguments):
    """Every HF Trainer flag plus the re-ranking loss."""

    loss: str = field(default="listwise", metadata={
        "help": f"{' | '.join(LOSSES)} (densir.losses; graded labels: the passages' 'relevance', else positive 1, "
                f"negatives 0; {' and '.join(TEACHER_LOSSES)} distil from the passages' teacher 'score', see "
                "tools/score_groups.py; mnrl: the positive against its hard negatives and --mnrl_num_negatives "
                "passages of other queries in the batch)"})
    temperature: float = field(default=1.0, metadata={"range": positive(),
        "help": "listwise: softmax over logits / temperature"})
    lambda_weighting: str = field(default="ndcg2pp", metadata={"help": "lambda: ndcg2pp | ndcg2 | lambdarank"})
    lambda_sigma: float = field(default=1.0, metadata={"range": positive(),
        "help": "lambda: logistic scale of score differences"})
    lambda_mu: float = field(default=10.0, metadata={"range": at_least(0, float),
        "help": "lambda: weight of the NDCG-Loss2 term in ndcg2pp"})
    lambda_k: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "lambda, ranknet: only pairs with a passage in the current top K (lambda: NDCG@K); default all"})
    pairwise_reduction: str = field(default="query", metadata={
        "help": "lambda, ranknet: query (sum over each query's pairs, mean over queries) | pair (mean over "
                "the batch's pairs, as sentence-transformers)"})
    ranknet_sigma: float = field(default=1.0, metadata={"range": positive(),
        "help": "ranknet: logistic scale of score differences"})
    kl_temperature: float = field(default=1.0, metadata={"range": positive(),
        "help": "kl: softmax temperature of both teacher and student scores"})
    mnrl_num_negatives: Optional[int] = field(default=4, metadata={"range": at_least(-1),
        "help": "mnrl: in-batch candidates per query, drawn from the other queries' groups (-1: all of them)"})
    mnrl_scale: float = field(default=10.0, metadata={"range": positive(),
        "help": "mnrl: scores are scale * activation(logit)"})
    mnrl_activation: str = field(default="sigmoid", metadata={"help": "mnrl: sigmoid | none"})
    gc_pair_chunk_size: int = field(default=32, metadata={"range": at_least(1),
        "help": "(query, passage) pairs per chunk with --grad_cache"})
    bce_pos_weight: Optional[float] = field(default=None, metadata={"range": positive(),
        "help": "bce: weight of positive pairs (e.g. n-1 to balance the negatives); default 1"})
    # validation during training: the data flags are --eval_run/--eval_queries/--eval_qrels/--eval_corpus
    per_device_eval_batch_size: int = field(default=64, metadata={"range": at_least(1),
        "help": "pairs per forward pass when validation re-ranks (densir.driver.rerank's --batch_size default)"})

    def __post_init__(self):
        check_ranges(self)  # every range before the checks across fields
        if self.loss not in LOSSES:
            raise ParameterError(f"`loss` must be one of {LOSSES}, got {self.loss!r}")
        if self.pairwise_reduction not in REDUCTIONS:
            raise ParameterError(f"`pairwise_reduction` must be one of {REDUCTIONS}, got {self.pairwise_reduction!r}")
        if self.mnrl_num_negatives is not None and self.mnrl_num_negatives < 0:
            self.mnrl_num_negatives = None  # -1: every other passage of the batch
        super().__post_init__()


@dataclass
class RerankArguments:
    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "reranker: a densir reranker dir, a sentence-transformers CrossEncoder dir or hub name"})
    run: Optional[str] = field(default=None, metadata={"help": "TREC run to re-rank"})
    corpus: Optional[str] = field(default=None, metadata={"help": "corpus JSONL {docid, title, text}"})
    queries: Optional[str] = field(default=None, metadata={"help": "queries JSONL {query_id, query}"})
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "instead of --corpus: a Hugging Face corpus dataset {docid, title, text} (hub name or local dir), "
                "e.g. Tevatron/msmarco-passage-corpus"})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "its configuration name"})
    dataset_split: str = field(default="train", metadata={"help": "its split"})
    query_dataset_name: Optional[str] = field(default=None, metadata={
        "help": "instead of --queries: a Hugging Face query dataset {query_id, query}, e.g. Tevatron/msmarco-passage"})
    query_dataset_config: Optional[str] = field(default=None, metadata={"help": "its configuration name"})
    query_dataset_split: str = field(default="dev", metadata={"help": "its split"})
    dataset_cache_dir: Optional[str] = field(default=None, metadata={"help": "datasets cache dir"})
    save_ranking_to: str = field(default=None, metadata={"help": "output TREC run (per shard: OUT.qshard-i-of-n)"})
    depth: int = field(default=100, metadata={"range": at_least(1), "help": "re-rank each query's top DEPTH hits"})
    max_len: Optional[int] = field(default=None, metadata={"range": at_least(1),
        "help": "max tokens of query + passage; default: the reranker's saved max_len, else min(tokenizer, 512)"})
    batch_size: int = field(default=64, metadata={"range": at_least(1), "help": "pairs per forward pass"})
    model_revision: Optional[str] = field(default=None, metadata={"help": "hub revision of a hub id (default main)"})
    precision: Optional[str] = field(default=None, metadata={
        "help": "auto | fp32 | fp16 | bf16 (densir.precision); default: from --fp16/--bf16, else fp32"})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast"})
    fp16: bool = field(default=False, metadata={"help": "fp16 autocast (GPU)"})
    backend: str = _BACKEND[0]
    quantize: str = _BACKEND[1]
    backend_recipe: Optional[str] = _BACKEND[2]
    query_shard: int = field(default=0, metadata={"range": at_least(0),
        "help": "this job's query range, 0..num_query_shards-1"})
    num_query_shards: int = field(default=1, metadata={"range": at_least(1),
        "help": "split the run's queries into this many ranges"})
    merge_query_shards: bool = field(default=False, metadata={
        "help": "concatenate the num_query_shards shard runs of save_ranking_to into save_ranking_to"})
    interpolate: Optional[float] = field(default=None, metadata={"range": between(0, 1),
        "help": "ALPHA in [0, 1]: rank by ALPHA * z(first-stage score) + (1 - ALPHA) * z(re-ranker score), "
                "z = per-query standardisation over the re-ranked hits (densir.search.fusion); default: the re-ranker alone"})
    tag: str = field(default="densir-rerank", metadata={"help": "run tag (6th column)"})
    device: Optional[str] = field(default=None, metadata={"help": "cuda | cpu; default cuda when available"})

    def __post_init__(self):
        check_ranges(self)
        if self.query_shard >= self.num_query_shards:
            raise ValueError(f"--query_shard must be < --num_query_shards {self.num_query_shards}, got {self.query_shard}")
