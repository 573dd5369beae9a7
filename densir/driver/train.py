"""Train a dense retriever (bi-encoder): ``python -m densir.driver.train``.

Reads
  --model_name_or_path   the starting encoder: a densir dir, a sentence-transformers dir or any
                         Hugging Face model (pooling/normalize from it unless given)
  --train_dir            train-group JSONL (get_data.sh's ``train.bm25.jsonl``, mined groups, ...):
                         files, or dirs read through --train_pattern; or --dataset_name, a HF
                         dataset in Tevatron's layout. Strings or pre-tokenized token ids.
Writes, under --output_dir
  checkpoint-N/          every --save_steps: the encoder (as below) + HF optimizer, scheduler,
                         RNG and trainer state; ``--resume_from_checkpoint auto`` resumes from the
                         latest complete one
  model.safetensors config.json tokenizer files densir_config.json (+ sentence-transformers
                         modules when tied; query_model/ passage_model/ when untied)
                         the final encoder, loadable by DenseEncoder.load and, when tied, by
                         sentence_transformers.SentenceTransformer(output_dir)
  training_args.json train_summary.json   the arguments, and the loss/steps/time of the run

Single process (CPU or one GPU), or ``torchrun --nproc_per_node N -m densir.driver.train ...``
(gloo on CPU, nccl on GPU). Flags: densir.retriever.arguments (ModelArguments, DataArguments,
DenseTrainingArguments = every HF Trainer flag + --temperature --negatives_x_device --grad_cache
--gc_q_chunk_size --gc_p_chunk_size), or one .json file holding them.

Example (SciFact BM25 groups, one epoch on CPU):
  python -m densir.driver.train --model_name_or_path all-MiniLM-L6-v2 --train_dir data/train.bm25.jsonl \\
      --output_dir runs/minilm-r1 --per_device_train_batch_size 16 --train_n_passages 4 --q_max_len 64 \\
      --p_max_len 256 --learning_rate 2e-5 --temperature 0.05 --num_train_epochs 1 --save_steps 20
"""
from __future__ import annotations

from densir.driver import train_main
from densir.retriever.arguments import DataArguments, DenseTrainingArguments, ModelArguments
from densir.retriever.trainer import train

__all__ = ["main", "train"]


def main(argv: list[str] | None = None) -> dict:
    return train_main((ModelArguments, DataArguments, DenseTrainingArguments), train, argv)


if __name__ == "__main__":
    main()
