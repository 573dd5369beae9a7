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
epoch exactly as for the bi-encoder); ``--loss`` picks the objective, a name of the registry
densir.losses.LOSSES (listwise, lambda, plistmle, ...; each loss's docstring gives its formula).

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

from densir.driver import train_main
from densir.reranker.arguments import RerankerDataArguments, RerankerModelArguments, RerankerTrainingArguments
from densir.reranker.trainer import train

__all__ = ["main", "train"]


def main(argv: list[str] | None = None) -> dict:
    return train_main((RerankerModelArguments, RerankerDataArguments, RerankerTrainingArguments), train, argv)


if __name__ == "__main__":
    main()
