"""Train a cross-encoder re-ranker: ``python -m densir.driver.train_reranker``.

Reads
  --model_name_or_path   the starting point: a densir re-ranker or any cross-encoder (HF
                         sequence-classification with one label, sentence-transformers
                         CrossEncoder), or a plain encoder / bi-encoder dir (its encoder weights
                         are kept, a fresh one-logit head is added)
  --train_dir            train-group JSONL, exactly as the bi-encoder reads it (get_data.sh's
                         ``train.bm25.jsonl``, mined hard-negative groups, a Tevatron HF dataset
                         through --dataset_name); strings or pre-tokenized token ids
Writes, under --output_dir
  checkpoint-N/          every --save_steps: the re-ranker + HF optimizer, scheduler, RNG and
                         trainer state; ``--resume_from_checkpoint auto`` resumes from the latest
  model.safetensors config.json tokenizer files modules.json sentence_bert_config.json
  config_sentence_transformers.json densir_reranker.json
                         the final re-ranker: CrossEncoderReranker.load(dir) and
                         sentence_transformers.CrossEncoder(dir) give the same scores (raw logits)
  training_args.json train_summary.json   the arguments, and the loss/steps/time of the run

Each query contributes ``--train_n_passages`` pairs (its positive + n-1 negatives, sampled per
epoch exactly as for the bi-encoder); ``--loss`` picks the objective (densir.rerank_loss):
  bce        binary cross entropy over every (query, passage, label) pair
  listwise   softmax cross entropy over the query's group (localized contrastive estimation)
  lambda     LambdaLoss (Wang et al. 2018), NDCG-weighted pairwise logistic loss

Flags: --model_name_or_path; the bi-encoder's DataArguments (--train_dir --train_pattern
--dataset_name --train_n_passages --pad_to_multiple_of ...) plus --max_len (query + passage
tokens); every HF Trainer flag (--bf16 --fp16 --per_device_train_batch_size --learning_rate
--num_train_epochs --save_steps --resume_from_checkpoint auto ...) plus --loss --temperature
--lambda_weighting --lambda_sigma --lambda_mu --bce_pos_weight; or one .json file holding them.
Single process, or ``torchrun --nproc_per_node N -m densir.driver.train_reranker ...``.

Example (SciFact BM25 groups, MiniLM encoder + new head, CPU):
  python -m densir.driver.train_reranker --model_name_or_path all-MiniLM-L6-v2 \\
      --train_dir data/train.bm25.jsonl --output_dir runs/reranker --loss listwise \\
      --train_n_passages 8 --max_len 256 --per_device_train_batch_size 4 --learning_rate 3e-5 \\
      --num_train_epochs 1 --warmup_steps 0.1 --save_steps 100
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from densir.arguments import BaseTrainingArguments, DataArguments, parse_args

logger = logging.getLogger("densir.driver.train_reranker")


@dataclass
class RerankerModelArguments:
    model_name_or_path: str = field(metadata={
        "help": "a cross-encoder (densir, HF one-label classifier, sentence-transformers CrossEncoder) "
                "or an encoder to put a fresh one-logit head on"})


@dataclass
class RerankerDataArguments(DataArguments):
    """The bi-encoder's train-group arguments; pairs are budgeted by --max_len instead."""

    max_len: int = field(default=256, metadata={
        "help": "tokens of query + passage together, special tokens included (the passage is truncated)"})
    q_max_len: int = field(default=32, metadata={"help": "not used by the re-ranker (see --max_len)"})
    p_max_len: int = field(default=128, metadata={"help": "not used by the re-ranker (see --max_len)"})

    def __post_init__(self):
        super().__post_init__()
        if self.train_n_passages < 2:
            raise ValueError("--train_n_passages must be >= 2 for a re-ranker (a positive and a negative)")


@dataclass
class RerankerTrainingArguments(BaseTrainingArguments):
    """Every HF Trainer flag plus the re-ranking loss."""

    loss: str = field(default="listwise", metadata={"help": "bce | listwise | lambda"})
    temperature: float = field(default=1.0, metadata={"help": "listwise: softmax over logits / temperature"})
    lambda_weighting: str = field(default="ndcg2pp", metadata={"help": "lambda: ndcg2pp | ndcg2 | lambdarank"})
    lambda_sigma: float = field(default=1.0, metadata={"help": "lambda: logistic scale of score differences"})
    lambda_mu: float = field(default=10.0, metadata={"help": "lambda: weight of the NDCG-Loss2 term in ndcg2pp"})
    bce_pos_weight: Optional[float] = field(default=None, metadata={
        "help": "bce: weight of positive pairs (e.g. n-1 to balance the negatives); default 1"})

    def __post_init__(self):
        from densir.rerank_loss import LOSSES

        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {LOSSES}, got {self.loss!r}")
        super().__post_init__()


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(
        RerankerModelArguments, RerankerDataArguments, RerankerTrainingArguments, argv=argv)
    from densir.trainer import setup_logging

    setup_logging(training_args)
    return train(model_args, data_args, training_args)


def train(model_args: RerankerModelArguments, data_args: RerankerDataArguments,
          training_args: RerankerTrainingArguments, callbacks: list | None = None) -> dict:
    """Build re-ranker, data and trainer; train (resuming when asked); save. Returns the summary."""
    from densir.data import TrainDataset
    # the bi-encoder driver's reader of --train_dir/--dataset_name: one implementation of it
    from densir.data import train_group_source
    from densir.modeling.reranker import CrossEncoderReranker
    from densir.rerank_trainer import RerankCollator, RerankerTrainer
    from densir.trainer import resume_checkpoint

    resume = resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)
    # a fresh classification head is drawn here, before the Trainer seeds anything: seed first,
    # so the same --seed gives the same model (and a bash run equals its SLURM twin)
    from transformers import set_seed

    set_seed(training_args.seed)
    reranker = CrossEncoderReranker.load(model_args.model_name_or_path, max_len=data_args.max_len)
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    dataset = TrainDataset(train_group_source(data_args), data_args.train_n_passages, seed=seed)
    collator = RerankCollator(reranker.tokenizer, data_args.max_len, data_args.pad_to_multiple_of)
    trainer = RerankerTrainer(model=reranker, args=training_args, train_dataset=dataset, data_collator=collator,
                              loss_fn=build_loss_from_args(training_args), callbacks=callbacks)
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    summary = {"global_step": result.global_step, "train_loss": result.training_loss, "loss": training_args.loss,
               "train_seconds": round(time.time() - start, 1), "queries": len(dataset),
               "resumed_from": resume, "skipped": dataset.stats,
               "log_history": [h for h in trainer.state.log_history if "loss" in h]}
    if trainer.is_world_process_zero():
        with open(Path(training_args.output_dir) / "train_summary.json", "w") as f:
            json.dump(summary, f, indent=2)
        print(f"trained {result.global_step} steps in {summary['train_seconds']} s, "
              f"{training_args.loss} loss {result.training_loss:.4f} -> {training_args.output_dir}")
    return summary


def build_loss_from_args(args: RerankerTrainingArguments):
    from densir.rerank_loss import build_loss

    if args.loss == "listwise":
        return build_loss("listwise", temperature=args.temperature)
    if args.loss == "lambda":
        return build_loss("lambda", weighting=args.lambda_weighting, sigma=args.lambda_sigma, mu=args.lambda_mu)
    return build_loss("bce", pos_weight=args.bce_pos_weight)


if __name__ == "__main__":
    main()
