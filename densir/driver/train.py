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
(gloo on CPU, nccl on GPU). Flags: densir.arguments (ModelArguments, DataArguments,
DenseTrainingArguments = every HF Trainer flag + --temperature --negatives_x_device --grad_cache
--gc_q_chunk_size --gc_p_chunk_size), or one .json file holding them.

Example (SciFact BM25 groups, one epoch on CPU):
  python -m densir.driver.train --model_name_or_path all-MiniLM-L6-v2 --train_dir data/train.bm25.jsonl \\
      --output_dir runs/minilm-r1 --per_device_train_batch_size 16 --train_n_passages 4 --q_max_len 64 \\
      --p_max_len 256 --learning_rate 2e-5 --temperature 0.05 --num_train_epochs 1 --save_steps 20
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from densir.arguments import DataArguments, DenseTrainingArguments, ModelArguments, parse_args
from densir.data import train_group_source
from densir.io import write_json
from densir.trainer import setup_logging

logger = logging.getLogger("densir.driver.train")


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_args(ModelArguments, DataArguments, DenseTrainingArguments, argv=argv)
    setup_logging(training_args)
    return train(model_args, data_args, training_args)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: DenseTrainingArguments,
          callbacks: list | None = None) -> dict:
    """Build encoder, data and trainer; train (resuming when asked); save. Returns the summary."""
    import torch

    from densir.data import TrainCollator, TrainDataset
    from densir.modeling.encoder import DenseEncoder
    from densir.trainer import DenseTrainer, resume_checkpoint

    resume = resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)
    encoder = DenseEncoder.build(model_args.model_name_or_path, pooling=model_args.pooling,
                                 normalize=model_args.normalize, untie_encoder=model_args.untie_encoder,
                                 query_prefix=model_args.query_prefix, passage_prefix=model_args.passage_prefix)
    encoder.config.max_seq_length = data_args.p_max_len  # what a sentence-transformers user gets
    logger.info("encoder %s: pooling=%s normalize=%s untied=%s", model_args.model_name_or_path,
                encoder.config.pooling, encoder.config.normalize, encoder.config.untied)

    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    dataset = TrainDataset(train_group_source(data_args), data_args.train_n_passages, seed=seed)
    collator = TrainCollator(encoder.tokenizer, data_args.q_max_len, data_args.p_max_len,
                             encoder.config.query_prefix, encoder.config.passage_prefix, data_args.pad_to_multiple_of)

    trainer = DenseTrainer(model=encoder, args=training_args, train_dataset=dataset, data_collator=collator,
                           callbacks=callbacks)
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    # HF's training_loss is this rank's own mean; the run's loss is the mean over ranks
    train_loss = trainer.accelerator.reduce(torch.tensor(result.training_loss, device=training_args.device),
                                            reduction="mean").item()
    summary = {"global_step": result.global_step, "train_loss": train_loss,
               "train_seconds": round(time.time() - start, 1), "queries": len(dataset),
               "resumed_from": resume, "skipped": dataset.stats,
               "log_history": [h for h in trainer.state.log_history if "loss" in h]}
    if trainer.is_world_process_zero():
        write_json(Path(training_args.output_dir) / "train_summary.json", summary)
        print(f"trained {result.global_step} steps in {summary['train_seconds']} s, "
              f"loss {train_loss:.4f} -> {training_args.output_dir}")
    return summary


if __name__ == "__main__":
    main()
